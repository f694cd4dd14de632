// fused-lora/workers: adapter training over a Redis queue (BullMQ). Workers on any number of machines
// take training jobs; jobs on one base train together as one mixed-adapter batch. A subpath of its
// own, so `require('fused-lora')` never loads BullMQ. See README.md, "Training workers".
export { createTrainingWorker, TRAINING_WORKER_KEYS } from './worker';
export type { TrainingWorker, TrainingWorkerOptions, ConnectionOptions } from './worker';
export { enqueueTraining, waitForTraining, TRAINING_JOB_NAME } from './client';
export type { EnqueueOptions } from './client';
export { checkTrainingJob, TRAINING_JOB_KEYS } from './job';
export type { TrainingJob, TrainingProgress, TrainingResult } from './job';
export { CHECKPOINT_DIR } from './checkpoint';
export { LoraError } from '../errors';
