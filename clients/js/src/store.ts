/**
 * Where the client keeps what must survive a restart: the sync cursors and the outbox of
 * unacknowledged sends, one JSON string per key. Methods may be synchronous or return promises,
 * so IndexedDB, a file or a native key-value store plug in the same way.
 */
export interface KeyValueStore {
  get(key: string): string | null | undefined | Promise<string | null | undefined>;
  set(key: string, value: string): void | Promise<void>;
  delete(key: string): void | Promise<void>;
}

/** Keeps everything in memory: state survives reconnects but not a restart. */
export class MemoryStore implements KeyValueStore {
  private readonly map = new Map<string, string>();

  get(key: string): string | null {
    return this.map.get(key) ?? null;
  }

  set(key: string, value: string): void {
    this.map.set(key, value);
  }

  delete(key: string): void {
    this.map.delete(key);
  }
}

/** The part of the Web Storage API this store needs (`localStorage`, `sessionStorage`). */
export interface WebStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/**
 * Keeps state in `localStorage` (or any Web Storage) under `prefix`, so a reload resumes from
 * its cursors and resends what was never acknowledged. A full or blocked storage loses the
 * write, never the session: the client then behaves like a fresh device after a reload.
 */
export class LocalStorageStore implements KeyValueStore {
  constructor(
    private readonly prefix = "gatehouse.",
    private readonly storage: WebStorage = (globalThis as { localStorage?: WebStorage }).localStorage as WebStorage,
  ) {
    if (!this.storage) throw new Error("LocalStorageStore: no localStorage in this environment");
  }

  get(key: string): string | null {
    try {
      return this.storage.getItem(this.prefix + key);
    } catch {
      return null;
    }
  }

  set(key: string, value: string): void {
    try {
      this.storage.setItem(this.prefix + key, value);
    } catch {
      // Quota exceeded or storage disabled: the state stays in memory.
    }
  }

  delete(key: string): void {
    try {
      this.storage.removeItem(this.prefix + key);
    } catch {
      // As above.
    }
  }
}
