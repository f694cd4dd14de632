// Records keyed by names read from files: a key like "__proto__" must become data, not a prototype.

/** Sets `key` as an own, enumerable property of `obj`. */
export function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}
