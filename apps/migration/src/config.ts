import { contractOnlyConfigSpec } from '@flotilla/platform';

export const migrationConfigSpec = contractOnlyConfigSpec('migration', '127.0.0.1:7404');
