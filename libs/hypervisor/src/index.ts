export * from './driver';
export * from './sim/sim-driver';
export * from './qemu/demo-image';
export * from './qemu/qemu-driver';
export * from './qemu/qmp-client';
export * from './qemu/qemu-command';
export * from './qemu/accel-probe';
export { validateDriverVmSpec, VM_SPEC_LIMITS } from './qemu/vm-spec-validation';
