export * from './accounting';
export * from './chain';
export * from './names';
export * from './sr';
export * from './vdi';
export * from './disk-migration';
