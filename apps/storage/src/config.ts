import { contractOnlyConfigSpec } from '@flotilla/platform';

export const storageConfigSpec = contractOnlyConfigSpec('storage', '127.0.0.1:7402');
