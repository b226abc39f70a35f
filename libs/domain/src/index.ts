export * from './errors';
export * from './host';
export * from './operation';
export * from './validation';
export * from './vm-lifecycle';
