export * from './driver';
export * from './sim/sim-driver';
export * from './qemu/demo-image';
