//! Blocks between users: `blocker` refuses `blocked`'s direct messages and group invitations.
//!
//! The append path checks blocks inside its own transaction (see `plan`), and an invitation
//! inside the group's; this module only records and lists them. A block takes the direct
//! conversation's lock (when the conversation exists) before it is written, so an append to
//! that conversation either committed before the block or sees it.

use crate::access::check_cap;
use crate::error::{Limit, StoreError};
use crate::groups::{count, lock_conversation, lock_user};
use crate::ids::{check_ident, direct_conversation_id, now_ms};
use crate::sql;
use crate::store::{Store, with_pool};

impl Store {
    /// Makes `blocker` refuse `blocked`'s direct messages and invitations; returns whether the
    /// block is new. Refused with [`StoreError::UnknownUser`] for a uid that never signed in and
    /// [`StoreError::LimitExceeded`] when `blocker` blocks as many users as allowed.
    pub async fn block(&self, blocker: &str, blocked: &str) -> Result<bool, StoreError> {
        check_ident("uid", blocker)?;
        check_ident("uid", blocked)?;
        if blocker == blocked {
            return Err(StoreError::InvalidInput("a user cannot block itself".to_owned()));
        }
        let conversation = direct_conversation_id(blocker, blocked);
        let max_blocks = self.limits.blocks_per_user;
        Ok(with_pool!(self, writer, |pool, dialect| {
            let mut tx = pool.begin_with(dialect.begin_write).await?;
            lock_conversation!(tx, dialect, &conversation);
            let exists: Option<String> = sqlx::query_scalar(dialect.sql(sql::USER_EXISTS))
                .bind(blocked)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Err(StoreError::UnknownUser(blocked.to_owned()));
            }
            let _registered = lock_user!(tx, dialect, blocker);
            if count!(tx, dialect, sql::IS_BLOCKED, blocker, blocked) > 0 {
                return Ok(false);
            }
            check_cap(
                Limit::BlocksPerUser,
                count!(tx, dialect, sql::COUNT_BLOCKS, blocker),
                max_blocks,
            )?;
            sqlx::query(dialect.sql(sql::ADD_BLOCK))
                .bind(blocker)
                .bind(blocked)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            true
        }))
    }

    /// Lifts `blocker`'s block of `blocked`; returns whether there was one.
    pub async fn unblock(&self, blocker: &str, blocked: &str) -> Result<bool, StoreError> {
        check_ident("uid", blocker)?;
        check_ident("uid", blocked)?;
        let removed = with_pool!(self, writer, |pool, dialect| {
            sqlx::query(dialect.sql(sql::DELETE_BLOCK))
                .bind(blocker)
                .bind(blocked)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(removed > 0)
    }

    /// Returns up to `limit` (1 to [`MAX_PAGE`](crate::MAX_PAGE)) of the users `uid` blocks
    /// with a uid after `after`, sorted, and whether more follow.
    pub async fn blocks_of(
        &self,
        uid: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<String>, bool), StoreError> {
        check_ident("uid", uid)?;
        let limit = limit.clamp(1, crate::MAX_PAGE);
        let mut blocked: Vec<String> = with_pool!(self, reader, |pool, dialect| {
            sqlx::query_scalar(dialect.sql(sql::BLOCKS_OF))
                .bind(uid)
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit) + 1)
                .fetch_all(pool)
                .await?
        });
        let more = blocked.len() > limit as usize;
        blocked.truncate(limit as usize);
        Ok((blocked, more))
    }
}
