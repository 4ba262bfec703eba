//! Full-text search over the messages a user may read: SQLite FTS5 (bm25), PostgreSQL
//! `tsvector` under a GIN index (`ts_rank`) and MariaDB's `FULLTEXT` index (`MATCH … AGAINST`),
//! all maintained inside the writing transactions (see the `events` migrations), ranked, paged,
//! with plain-text snippets and the positions of the matched words.

use futures_util::TryStreamExt;

use crate::error::StoreError;
use crate::ids::check_ident;
use crate::model::{MessageRow, StoredMessage};
use crate::store::{Backend, Store};

/// Most words in a query.
pub const MAX_QUERY_WORDS: usize = 10;
/// Largest `offset` of a search page.
pub const MAX_SEARCH_OFFSET: u32 = 1_000;
/// Largest search page.
pub const MAX_SEARCH_LIMIT: u32 = 50;

/// Marks the start of a matched word in a snippet as the databases return it.
const START: char = '\u{1}';
/// Marks the end of a matched word.
const STOP: char = '\u{2}';

/// A parsed search query: lower-case words, each matched whole or (`prefix`) as a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    words: Vec<(String, bool)>,
}

impl SearchQuery {
    /// Splits `text` into words (runs of letters and digits); a `*` right after a word makes
    /// it a prefix. Refuses a query of no word or of more than [`MAX_QUERY_WORDS`].
    pub fn parse(text: &str) -> Result<SearchQuery, StoreError> {
        let mut words: Vec<(String, bool)> = Vec::new();
        let mut current = String::new();
        for c in text.chars() {
            if c.is_alphanumeric() {
                current.extend(c.to_lowercase());
                continue;
            }
            if !current.is_empty() {
                words.push((std::mem::take(&mut current), c == '*'));
            }
        }
        if !current.is_empty() {
            words.push((current, false));
        }
        if words.is_empty() {
            return Err(StoreError::InvalidInput("the query has no word".to_owned()));
        }
        if words.len() > MAX_QUERY_WORDS {
            return Err(StoreError::InvalidInput(format!(
                "the query has more than {MAX_QUERY_WORDS} words"
            )));
        }
        Ok(SearchQuery { words })
    }

    /// The FTS5 query: every word quoted (so no word is an operator), all required.
    fn fts5(&self) -> String {
        self.render("\"", "\"", "*", " ")
    }

    /// The MariaDB boolean-mode query: every word required (`+`), prefixes as `*`.
    fn boolean(&self) -> String {
        self.render("+", "", "*", " ")
    }

    /// The `to_tsquery` text: the words joined with `&`, prefixes as `:*`.
    fn tsquery(&self) -> String {
        self.render("", "", ":*", " & ")
    }

    /// Every word between `open` and `close`, followed by `prefix` when it is a prefix, joined
    /// by `separator`: the three engines differ only in these.
    fn render(&self, open: &str, close: &str, prefix: &str, separator: &str) -> String {
        let terms: Vec<String> = self
            .words
            .iter()
            .map(|(word, is_prefix)| format!("{open}{word}{close}{}", if *is_prefix { prefix } else { "" }))
            .collect();
        terms.join(separator)
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    /// The message, in its current state.
    pub message: StoredMessage,
    /// Plain text around the matches.
    pub snippet: String,
    /// `[start, end)` character positions of the matched words in `snippet`.
    pub highlights: Vec<(usize, usize)>,
}

/// One page of search results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPage {
    /// The hits, best first.
    pub hits: Vec<SearchHit>,
    /// Whether more follow (ask again with `offset` + the number of hits).
    pub more: bool,
}

/// A search row: the message and its marked snippet.
#[derive(Debug, sqlx::FromRow)]
struct SearchRow {
    #[sqlx(flatten)]
    message: MessageRow,
    snippet: String,
}

/// Matches of FTS5 query `$1` readable by `$2` (in conversation `$3` unless it is empty), best
/// first, `$4` from `$5` on.
const SQLITE_SEARCH: &str = "SELECT m.id, m.conversation_id, m.seq, m.sender, m.cid, m.text, m.ts_ms, m.kind, \
     m.target, m.reply_to, m.edited_ms, m.deleted, m.reactions, \
     snippet(message_search, 0, char(1), char(2), '…', 30) AS snippet \
     FROM message_search JOIN messages AS m ON m.id = message_search.rowid \
     JOIN members AS v ON v.conversation_id = m.conversation_id AND v.uid = $2 \
     JOIN conversations AS c ON c.id = m.conversation_id \
     WHERE message_search MATCH $1 AND ($3 = '' OR m.conversation_id = $3) \
     AND m.kind = 'message' AND m.deleted = 0 \
     AND m.seq > CASE WHEN c.history = 'joined' THEN v.joined_seq ELSE 0 END \
     ORDER BY bm25(message_search), m.id DESC LIMIT $4 OFFSET $5";

/// The same on PostgreSQL: `$1` is a `to_tsquery` text, `$6` the headline options.
const POSTGRES_SEARCH: &str = "SELECT m.id, m.conversation_id, m.seq, m.sender, m.cid, m.text, m.ts_ms, m.kind, \
     m.target, m.reply_to, m.edited_ms, m.deleted, m.reactions, \
     ts_headline('simple'::regconfig, m.text, q, $6) AS snippet \
     FROM to_tsquery('simple'::regconfig, $1) AS q \
     JOIN messages AS m ON m.search @@ q \
     JOIN members AS v ON v.conversation_id = m.conversation_id AND v.uid = $2 \
     JOIN conversations AS c ON c.id = m.conversation_id \
     WHERE ($3 = '' OR m.conversation_id = $3) \
     AND m.seq > CASE WHEN c.history = 'joined' THEN v.joined_seq ELSE 0 END \
     ORDER BY ts_rank(m.search, q) DESC, m.id DESC LIMIT $4 OFFSET $5";

/// `ts_headline` options: the markers the snippets are parsed with, about 30 words.
const HEADLINE: &str = "StartSel=\"\u{1}\", StopSel=\"\u{2}\", MaxWords=30, MinWords=12, ShortWord=0, \
     MaxFragments=2, FragmentDelimiter=\" … \"";

/// Words of context a computed snippet keeps on each side of its first match.
const CONTEXT_WORDS: usize = 12;

impl SearchQuery {
    /// Whether `word` (lower-case) matches one of the query's words (whole, or as a prefix).
    fn matches(&self, word: &str) -> bool {
        self.words.iter().any(|(w, prefix)| {
            if *prefix {
                word.starts_with(w.as_str())
            } else {
                word == w
            }
        })
    }

    /// A snippet of `text` around its first match, with the matched words' character ranges:
    /// for backends whose full-text index has no snippet function of its own.
    pub(crate) fn snippet(&self, text: &str) -> (String, Vec<(usize, usize)>) {
        // Words as character ranges: runs of letters and digits.
        let chars: Vec<char> = text.chars().collect();
        let mut words: Vec<(usize, usize)> = Vec::new();
        let mut start = None;
        for (i, c) in chars.iter().enumerate() {
            match (c.is_alphanumeric(), start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    words.push((s, i));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            words.push((s, chars.len()));
        }
        let lower = |(a, b): (usize, usize)| chars[a..b].iter().flat_map(|c| c.to_lowercase()).collect::<String>();
        let first = words.iter().position(|&w| self.matches(&lower(w))).unwrap_or(0);
        let from = first.saturating_sub(CONTEXT_WORDS);
        let to = (first + CONTEXT_WORDS + 1).min(words.len());
        if words.is_empty() {
            return (text.chars().take(200).collect(), Vec::new());
        }
        let (begin, end) = (
            if from == 0 { 0 } else { words[from].0 },
            if to == words.len() {
                chars.len()
            } else {
                words[to - 1].1
            },
        );
        let mut snippet = String::new();
        let offset = if from > 0 {
            snippet.push('…');
            1
        } else {
            0
        };
        snippet.extend(&chars[begin..end]);
        if to < words.len() {
            snippet.push('…');
        }
        let highlights = words[from..to]
            .iter()
            .filter(|&&w| self.matches(&lower(w)))
            .map(|&(a, b)| (a - begin + offset, b - begin + offset))
            .collect();
        (snippet, highlights)
    }
}

/// Removes the markers from a snippet and returns it with the marked ranges, in characters.
pub(crate) fn unmark(marked: &str) -> (String, Vec<(usize, usize)>) {
    let mut text = String::with_capacity(marked.len());
    let mut highlights = Vec::new();
    let (mut position, mut open) = (0, None);
    for c in marked.chars() {
        match c {
            START => open = Some(position),
            STOP => {
                if let Some(start) = open.take()
                    && position > start
                {
                    highlights.push((start, position));
                }
            }
            c => {
                text.push(c);
                position += 1;
            }
        }
    }
    (text, highlights)
}

impl Store {
    /// Searches the messages `uid` may read (in `conversation` only, when given) for `query`:
    /// live messages (no events, no tombstones) of conversations it is a member of, above its
    /// read floor. Results are ranked (bm25 / `ts_rank`), newest first among equals; `offset`
    /// skips that many (at most [`MAX_SEARCH_OFFSET`]), `limit` is capped at
    /// [`MAX_SEARCH_LIMIT`], and `admit` (the caller's byte budget) ends the page early.
    pub async fn search(
        &self,
        uid: &str,
        query: &SearchQuery,
        conversation: Option<&str>,
        offset: u32,
        limit: u32,
        admit: &mut (dyn FnMut(&SearchHit) -> bool + Send),
    ) -> Result<SearchPage, StoreError> {
        check_ident("uid", uid)?;
        let offset = i64::from(offset.min(MAX_SEARCH_OFFSET));
        let limit = limit.clamp(1, MAX_SEARCH_LIMIT) as usize;
        let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        let conversation = conversation.unwrap_or("");
        let mut page = SearchPage {
            hits: Vec::new(),
            more: false,
        };
        let mut take = |row: SearchRow, page: &mut SearchPage| {
            let (snippet, highlights) = if row.snippet.is_empty() {
                query.snippet(&row.message.text)
            } else {
                unmark(&row.snippet)
            };
            let hit = SearchHit {
                message: row.message.into_stored(),
                snippet,
                highlights,
            };
            if page.hits.len() == limit || !admit(&hit) {
                page.more = true;
                return false;
            }
            page.hits.push(hit);
            true
        };
        match &*self.inner {
            Backend::Sqlite(backend) => {
                let mut rows = sqlx::query_as::<_, SearchRow>(SQLITE_SEARCH)
                    .bind(query.fts5())
                    .bind(uid)
                    .bind(conversation)
                    .bind(fetch)
                    .bind(offset)
                    .fetch(backend.reader());
                while let Some(row) = rows.try_next().await? {
                    if !take(row, &mut page) {
                        break;
                    }
                }
            }
            Backend::Postgres(backend) => {
                let mut rows = sqlx::query_as::<_, SearchRow>(POSTGRES_SEARCH)
                    .bind(query.tsquery())
                    .bind(uid)
                    .bind(conversation)
                    .bind(fetch)
                    .bind(offset)
                    .bind(HEADLINE)
                    .fetch(backend.reader());
                while let Some(row) = rows.try_next().await? {
                    if !take(row, &mut page) {
                        break;
                    }
                }
            }
            Backend::MySql(backend) => {
                // MariaDB has no snippet function: the snippet is cut around the first match here.
                let boolean = query.boolean();
                let mut rows = sqlx::query_as::<_, SearchRow>(crate::mysql::SEARCH)
                    .bind(&boolean)
                    .bind(uid)
                    .bind(&boolean)
                    .bind(conversation)
                    .bind(conversation)
                    .bind(fetch)
                    .bind(offset)
                    .fetch(backend.reader());
                while let Some(row) = rows.try_next().await? {
                    if !take(row, &mut page) {
                        break;
                    }
                }
            }
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_become_quoted_words_and_prefixes() {
        let query = SearchQuery::parse("Deploy  fail* \"OR\" don't").unwrap();
        assert_eq!(query.fts5(), r#""deploy" "fail"* "or" "don" "t""#);
        assert_eq!(query.tsquery(), "deploy & fail:* & or & don & t");
        assert_eq!(query.boolean(), "+deploy +fail* +or +don +t");
        assert!(SearchQuery::parse("  ?! ").is_err());
        assert!(SearchQuery::parse(&"w ".repeat(MAX_QUERY_WORDS + 1)).is_err());
    }

    #[test]
    fn computed_snippets_mark_whole_words_and_prefixes() {
        let query = SearchQuery::parse("deploy fail*").unwrap();
        let (snippet, ranges) = query.snippet("The Deploy failed: redeploy later");
        assert_eq!(snippet, "The Deploy failed: redeploy later");
        let marked: Vec<String> = ranges
            .iter()
            .map(|&(a, b)| snippet.chars().skip(a).take(b - a).collect())
            .collect();
        assert_eq!(marked, vec!["Deploy", "failed"]);
        let long = format!("{} deploy {}", "word ".repeat(40), "tail ".repeat(40));
        let (snippet, ranges) = query.snippet(&long);
        assert!(snippet.starts_with('…') && snippet.ends_with('…'), "{snippet}");
        let (a, b) = ranges[0];
        assert_eq!(snippet.chars().skip(a).take(b - a).collect::<String>(), "deploy");
    }

    #[test]
    fn markers_become_character_ranges() {
        let (text, ranges) = unmark("the \u{1}déploy\u{2} \u{1}failed\u{2} again");
        assert_eq!(text, "the déploy failed again");
        assert_eq!(ranges, vec![(4, 10), (11, 17)]);
        let chars: Vec<char> = text.chars().collect();
        assert_eq!(chars[4..10].iter().collect::<String>(), "déploy");
    }
}
