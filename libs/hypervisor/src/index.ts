export * from './driver';
export * from './sim/sim-driver';
