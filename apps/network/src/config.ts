import { contractOnlyConfigSpec } from '@flotilla/platform';

export const networkConfigSpec = contractOnlyConfigSpec('network', '127.0.0.1:7403');
