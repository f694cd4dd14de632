// The CPU addon's exports for a reduced-precision frozen base (native/addon/lora_entry.cpp,
// native/include/fused_lora/lowp.h), typed once. It is the same addon as lib/backends/cpu/binding.ts:
// the layer exports take a weight format (`wFormat`) and bf16 activations (`act: 'bf16'`, Uint16Arrays
// of bf16 bits) besides their float32 arguments.
import { native as cpuNative } from '../cpu/binding';

export type WFormat = 'f32' | 'bf16' | 'int8' | 'nf4';
export type Quantize = 'int8' | 'nf4';

/** A frozen weight (O, I) as the addon reads it. */
export type WeightArgs =
  | { wFormat: 'f32'; W: Float32Array }
  | { wFormat: 'bf16'; W: Uint16Array }
  | { wFormat: 'int8'; W: Int8Array; wScale: Float32Array }
  | { wFormat: 'nf4'; W: Uint8Array; wAbsmax: Float32Array };

/** An activation: float32, or bf16 bits with `act: 'bf16'`. */
export type Act = Float32Array | Uint16Array;

export type LowpLinearForwardArgs = WeightArgs & { M: number; I: number; O: number; act: 'f32' | 'bf16'; x: Act; bias: Float32Array | null; y: Act };
export type LowpLinearBackwardArgs = WeightArgs & { M: number; I: number; O: number; act: 'f32' | 'bf16'; dy: Act; dx: Act };
export type LowpLoraForwardArgs = WeightArgs & {
  M: number; I: number; O: number; r: number; act: 'f32' | 'bf16';
  x: Act; bias: Float32Array | null; A: Float32Array; B: Float32Array; scaling: number; fused: boolean;
  dropoutP?: number; seed?: number; step?: number; mask?: Uint8Array; xDrop?: Float32Array;
  s: Float32Array; y: Act;
};
export type LowpLoraBackwardArgs = WeightArgs & {
  M: number; I: number; O: number; r: number; act: 'f32' | 'bf16';
  x: Act; s: Float32Array; dy: Act; A: Float32Array; B: Float32Array; scaling: number; fused: boolean;
  dropoutP?: number; mask?: Uint8Array; xDrop?: Float32Array;
  ds: Float32Array; loraDx?: Float32Array; dx: Act | null; dA: Float32Array; dB: Float32Array; accumulate: boolean;
};

export interface LowpBinding {
  linearForward(args: LowpLinearForwardArgs): void;
  linearForwardAsync(args: LowpLinearForwardArgs): Promise<void>;
  linearBackward(args: LowpLinearBackwardArgs): void;
  linearBackwardAsync(args: LowpLinearBackwardArgs): Promise<void>;
  loraForward(args: LowpLoraForwardArgs): void;
  loraForwardAsync(args: LowpLoraForwardArgs): Promise<void>;
  loraBackward(args: LowpLoraBackwardArgs): void;
  loraBackwardAsync(args: LowpLoraBackwardArgs): Promise<void>;
  /** int8: q (O·I) and scale (O); nf4: q (O·I / 2) and scale = the absmax (O·I / 64). */
  quantize(args: { format: Quantize; W: Float32Array; O: number; I: number; q: Int8Array | Uint8Array; scale: Float32Array }): void;
  /** Ŵ rows [o0, o1) as the GEMMs use them (dequantized, rounded to bf16) into out. */
  dequantize(args: WeightArgs & { O: number; I: number; o0?: number; o1?: number; out: Float32Array }): void;
  toBf16(args: { src: Float32Array; dst: Uint16Array; n: number }): void;
  fromBf16(args: { src: Uint16Array; dst: Float32Array; n: number }): void;
}

export const lowp = cpuNative as unknown as LowpBinding;
