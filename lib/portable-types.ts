// What the public declarations need from the runtime, declared so that an app compiles against them
// with only `lib: es2022` and without @types/node: the disposal symbol of explicit resource management
// (`using`), as lib.esnext.disposable and @types/node declare it too (declarations merge), and the
// part of AbortSignal the async calls read.

declare global {
  interface SymbolConstructor {
    readonly dispose: unique symbol;
  }
}

/** An AbortSignal (the global one: `AbortSignal.timeout(30)`, `controller.signal`), as the async calls read it. */
export interface AbortSignalLike {
  readonly aborted: boolean;
  readonly reason: unknown;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}
