// Shared setup for the end-to-end tests: the server under test is given by the environment
// (the Rust harness starts it on a fresh database and runs `node --test <file>`).
import { createClient } from '@supabase/supabase-js';
import WebSocket from 'ws';

export const url = process.env.SUPABASE_URL;
export const anonKey = process.env.SUPABASE_ANON_KEY;
export const serviceRoleKey = process.env.SUPABASE_SERVICE_ROLE_KEY;
if (!url || !anonKey) {
  throw new Error('SUPABASE_URL and SUPABASE_ANON_KEY must be set (run through cargo test)');
}

/** A fresh client with in-memory session storage, like a new browser tab. */
export function client(key = anonKey, options = {}) {
  const store = new Map();
  return createClient(url, key, {
    auth: {
      persistSession: true,
      autoRefreshToken: false,
      detectSessionInUrl: false,
      storage: {
        getItem: (k) => store.get(k) ?? null,
        setItem: (k, v) => store.set(k, v),
        removeItem: (k) => store.delete(k),
      },
    },
    realtime: { transport: WebSocket },
    ...options,
  });
}

export function adminClient() {
  return client(serviceRoleKey, {});
}

let n = 0;
/** A unique email for this run. */
export function email(tag = 'user') {
  n += 1;
  return `${tag}-${Date.now()}-${n}-${Math.random().toString(36).slice(2, 8)}@example.com`;
}
