import type { migrationV1 } from '@flotilla/contracts';

/**
 * What the migration service offers other parts of the same process (host evacuation): the same
 * behaviour as MigrationService over gRPC, at pool scope (no tenant restriction, no role check: the
 * caller has already authorised the evacuation).
 *
 * Errors are thrown as gRPC errors (RpcException / status codes) exactly as the RPCs would answer them:
 * INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION / RESOURCE_EXHAUSTED (blockers, one ErrorDetail each),
 * UNAVAILABLE.
 */
export interface MigrationPort {
  /** PreflightMigration: blockers are the answer, not an error. tenantId restricts the VM to a tenant. */
  preflight(spec: migrationV1.MigrationSpec, tenantId?: string): Promise<migrationV1.PreflightCheck>;
  /**
   * CreateMigration tagged with the evacuation: returns at once (QUEUED or RUNNING), the run continues
   * in the background. A repeat with the same requestId returns the first migration.
   */
  start(input: {
    requestId: string;
    spec: migrationV1.MigrationSpec;
    evacuationId: string;
    name?: string;
  }): Promise<migrationV1.Migration>;
  /** GetMigration. NOT_FOUND when unknown. */
  get(id: string): Promise<migrationV1.Migration>;
  /** CancelMigration. FAILED_PRECONDITION once the point of no return is passed or it is finished. */
  cancel(id: string): Promise<migrationV1.Migration>;
}

/** Nest injection token of the MigrationPort provider. */
export const MIGRATION_PORT = Symbol('MigrationPort');
