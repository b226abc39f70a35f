# One image for every Flotilla service. docker-compose.yml builds two targets of this file:
#   service (the default, last stage): gateway, compute, storage, network, migration — and the CLI
#   agent: the same plus QEMU from Debian's packages, for host agents
# The entry point runs nothing without an app name:
#   docker run --rm flotilla:local gateway        # node dist/apps/gateway/src/main.js
#   docker run --rm flotilla:local                # lists the apps, exits 64
# Everything comes from the npm registry and Debian's packages; nothing prebuilt is downloaded.

ARG NODE_IMAGE=node:20-bookworm-slim

# --- build: install with the lockfile, compile with swc, drop dev dependencies ---------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
ENV CI=true NX_DAEMON=false NX_NO_CLOUD=true NPM_CONFIG_UPDATE_NOTIFIER=false
COPY package.json package-lock.json ./
# --ignore-scripts: the sources are not here yet for package.json's `prepare` (a build); the dependencies'
# own install scripts only check what their prebuilt optional packages already brought.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN node tools/build.mjs \
  && npm prune --omit=dev --no-audit --no-fund \
  && npm cache clean --force

# --- runtime: node, the pruned node_modules, dist/ and proto/ (loaded at run time) ------------------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    FLOTILLA_HOME=/app \
    FLOTILLA_DATA_DIR=/var/lib/flotilla \
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/proto ./proto
COPY --from=build /app/dist ./dist
COPY tools/ci/flotilla-service.sh /usr/local/bin/flotilla-service
RUN chmod 0755 /usr/local/bin/flotilla-service \
  && printf '#!/bin/sh\nexec node /app/dist/apps/cli/src/main.js "$@"\n' > /usr/local/bin/flotilla \
  && chmod 0755 /usr/local/bin/flotilla \
  && mkdir -p /var/lib/flotilla \
  && chown node:node /var/lib/flotilla
ENTRYPOINT ["flotilla-service"]
CMD []

# --- agent: host agents run QEMU (qemu-system-x86_64, qemu-img) as root, privileged, with /dev/kvm ---------
FROM runtime AS agent
RUN apt-get update \
  && apt-get install -y --no-install-recommends qemu-system-x86 qemu-utils \
  && rm -rf /var/lib/apt/lists/*
USER root

# --- service: pool services and the gateway run as the unprivileged `node` user --------------------------
FROM runtime AS service
USER node
