export * from './errors';
export * from './host';
export * from './image';
export * from './nics';
export * from './operation';
export * from './validation';
export * from './vm-lifecycle';
