-- Members no longer carry a foreign key to their conversation, as messages stopped doing in
-- 0003. Every path that adds members already guarantees the conversation: a new direct
-- conversation's two members are inserted by the transaction that has just created it, a group's
-- creator by the one that has just created the group, and a joining member under the group's
-- row lock after reading it; conversations are never deleted. The trigger only re-checked, row
-- by row, with a query of its own, what the transaction had just written or locked: it was about
-- half of what adding a member cost, the largest part of a message that opens a conversation
-- (measured on 500-message batches of new conversations: 11-13 ms to add their members with the
-- key, 7-9.5 ms without it).
ALTER TABLE members DROP CONSTRAINT IF EXISTS members_conversation_id_fkey;
