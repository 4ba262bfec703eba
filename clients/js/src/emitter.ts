/**
 * A minimal typed event emitter (works the same in browsers and Node, no dependency): `on`
 * returns the function that removes the listener. A listener that throws does not stop the
 * others; the exception is reported through `onListenerError`.
 */
export class Emitter<Events extends { [K in keyof Events]: unknown }> {
  private listeners = new Map<keyof Events, Set<(value: never) => void>>();

  constructor(private onListenerError: (error: unknown) => void = (error) => console.error(error)) {}

  /** Calls `listener` for every `type` event until the returned function is called. */
  on<K extends keyof Events>(type: K, listener: (value: Events[K]) => void): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(listener as (value: never) => void);
    return () => set.delete(listener as (value: never) => void);
  }

  /** Calls `listener` for the next `type` event only. */
  once<K extends keyof Events>(type: K, listener: (value: Events[K]) => void): () => void {
    const off = this.on(type, (value) => {
      off();
      listener(value);
    });
    return off;
  }

  /** Delivers `value` to every listener of `type`. */
  emit<K extends keyof Events>(type: K, value: Events[K]): void {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as (value: Events[K]) => void)(value);
      } catch (error) {
        this.onListenerError(error);
      }
    }
  }
}
