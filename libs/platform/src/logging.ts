import { AsyncLocalStorage } from 'node:async_hooks';
import pino, { Logger } from 'pino';

/** What every log line and outgoing call of one request carries. */
export interface RequestContext {
  requestId: string;
  method?: string;
  tenantId?: string;
}

export const requestContext = new AsyncLocalStorage<RequestContext>();

/** One JSON logger per process; lines carry the current request id without anyone passing it around. */
export function createLogger(service: string, level = process.env.FLOTILLA_LOG_LEVEL || 'info'): Logger {
  return pino({
    name: service,
    level,
    base: { service },
    redact: {
      paths: ['token', 'secret', 'password', '*.token', '*.secret', '*.password'],
      censor: '[redacted]',
    },
    mixin() {
      const ctx = requestContext.getStore();
      return ctx ? { requestId: ctx.requestId, ...(ctx.tenantId ? { tenantId: ctx.tenantId } : {}) } : {};
    },
  });
}

export type { Logger };
