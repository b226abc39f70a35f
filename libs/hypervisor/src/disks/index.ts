export * from './qemu-img';
export * from './sr-files';
export * from './disk-files';
export * from './sr-directory';
