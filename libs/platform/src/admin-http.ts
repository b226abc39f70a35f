import * as http from 'node:http';
import { Logger } from './logging';

export interface AdminResponse {
  status: number;
  contentType: string;
  body: string;
}

/** GET handlers by path; anything else is 404 (naming the paths) or 405. */
export type AdminRoutes = Record<string, () => AdminResponse | Promise<AdminResponse>>;

export const textResponse = (status: number, body: string): AdminResponse => ({
  status,
  contentType: 'text/plain',
  body,
});

/** Operators' HTTP endpoints (health, readiness, Prometheus metrics) of a Flotilla process. */
export function serveAdminHttp(address: string, routes: AdminRoutes, logger: Logger): Promise<http.Server> {
  const paths = Object.keys(routes).join(', ');
  const server = http.createServer((req, res) => {
    void (async () => {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET') return send(res, textResponse(405, 'method not allowed\n'));
      const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
      send(res, route ? await route() : textResponse(404, `not found: try ${paths}\n`));
    })().catch((e: unknown) => {
      logger.warn({ err: e }, 'admin http request failed');
      send(res, textResponse(500, 'internal error\n'));
    });
  });
  return listenHttp(server, address);
}

/** Starts an HTTP server on host:port ("[::1]:80" too); rejects when the port cannot be had. */
export function listenHttp(server: http.Server, address: string): Promise<http.Server> {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(address.slice(i + 1));
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

function send(res: http.ServerResponse, r: AdminResponse): void {
  res.writeHead(r.status, { 'content-type': r.contentType, 'cache-control': 'no-store' });
  res.end(r.body);
}
