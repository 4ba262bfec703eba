-- Messages no longer carry a foreign key to their conversation. Every append already holds the
-- conversation's row lock (FOR NO KEY UPDATE, stronger than the key-share lock the foreign-key
-- trigger takes) and conversations are never deleted, so the trigger only re-checked, row by
-- row, what the transaction had just locked: about a quarter of the insert's cost (measured:
-- 9.4 -> 7.2 ms per 500-message batch).
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_conversation_id_fkey;
