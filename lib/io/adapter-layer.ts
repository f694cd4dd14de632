// What saveAdapter and loadAdapter need from a layer with a LoRA adapter, so one io path serves
// every such layer (LinearLoRA here, LoRADense in fused-lora/tfjs) without knowing its class; and from
// a layer with many (MultiLoRALinear), which hands out each of its adapters as such a layer.

/** A layer's sizes and scaling settings, as adapter_config.json records them. */
export interface AdapterSettings {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly rank: number;
  readonly alpha: number;
  readonly rslora: boolean;
  readonly dropout: number;
}

/** The adapter values a load sets, in our layout: A (I, r), B (r, O). */
export interface AdapterValues {
  readonly alpha: number;
  readonly rslora: boolean;
  readonly A: Float32Array;
  readonly B: Float32Array;
}

export interface AdapterLayer {
  /** A LoraError naming `arg` when the layer cannot say yet (a layer not built). */
  adapterSettings(where: string, arg: string): AdapterSettings;
  /**
   * A (I, r) and B (r, O) as host float32 in our layout: views where the layer's memory allows it,
   * so read them before the layer changes. A LoraError naming `arg` for a disposed layer.
   */
  adapterWeights(where: string, arg: string): { A: Float32Array; B: Float32Array };
  /** A LoraError naming `arg` when the layer cannot take an adapter now (disposed, merged). Changes nothing. */
  checkAdapterTarget(where: string, arg: string): void;
  /** Sets the adapter; the caller has checked every value against adapterSettings(). */
  setAdapter(where: string, values: AdapterValues): void;
}

export function isAdapterLayer(v: unknown): v is AdapterLayer {
  const l = v as Record<keyof AdapterLayer, unknown> | null;
  return l !== null && typeof l === 'object' && typeof l.adapterSettings === 'function' && typeof l.adapterWeights === 'function' &&
    typeof l.checkAdapterTarget === 'function' && typeof l.setAdapter === 'function';
}

/** A layer of many named adapters: each is saved and loaded on its own, as a single-adapter layer. */
export interface MultiAdapterLayer {
  readonly adapterNames: string[];
  /** The adapter `name` as an AdapterLayer, or a LoraError naming `arg` when the layer has none of that name. */
  adapterLayer(where: string, arg: string, name: unknown): AdapterLayer;
}

export function isMultiAdapterLayer(v: unknown): v is MultiAdapterLayer {
  const l = v as Record<keyof MultiAdapterLayer, unknown> | null;
  return l !== null && typeof l === 'object' && typeof l.adapterLayer === 'function' && Array.isArray(l.adapterNames);
}
