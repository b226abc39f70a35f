export * from './convergence';
export * from './options';
export * from './precopy-model';
export * from './evacuation-plan';
