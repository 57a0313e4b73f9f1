//! Reading a relayed body as it passes, without holding it back: when its first content came,
//! the gaps between tokens, and how many tokens there were.
//!
//! The relay forwards the upstream's bytes untouched (see `crate::upstream::relay`), so the meter
//! only looks. For an SSE stream it splits the bytes into events (an event ends at a blank line,
//! and may arrive split across chunks, or several to a chunk), and for each `data:` event asks two
//! cheap questions of its text, without parsing the JSON: does it carry content
//! (`"content":"` and at least one character), and does it carry `"completion_tokens":N` (the
//! usage chunk OpenAI sends last with `stream_options.include_usage`). A plain JSON answer is
//! searched for `"completion_tokens"` only, across chunk boundaries.
//!
//! Tokens are the upstream's own count when it sent one; otherwise, for a stream, one per content
//! event, which is what OpenAI-style providers send (one token per chunk, sometimes a few):
//! an estimate, and the log line says which (`tokens` with `tokens_source`).
//!
//! Keep-alive comments (`: keep-alive`, see `crate::upstream::keepalive`) are not events and
//! move nothing here: a first token that came after one is still timed to the token.

use std::sync::LazyLock;
use std::time::Instant;

// Every event of every stream is searched (content, usage): SIMD `memmem` with its searcher built
// once, not `windows().position()` comparing the needle at every byte (issue 17).
use memchr::memmem::Finder;

/// An event larger than this is not inspected (nor kept): usage chunks and token deltas are far
/// smaller, so this bounds the meter's memory without missing what it looks for.
const MAX_EVENT: usize = 64 * 1024;
/// The bytes of one chunk kept to find a pattern split across two chunks of a JSON body.
const CARRY: usize = 64;

/// What one chunk showed, for the caller's histograms.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The first content of the body arrived with this chunk.
    pub first: bool,
    /// This chunk carried content, `gap` after the previous content (none for the first).
    pub gap: Option<std::time::Duration>,
}

/// Where the token count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `usage.completion_tokens`, as the upstream counted.
    Usage,
    /// Content events counted (a stream without a usage chunk).
    Events,
}

impl TokenSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Usage => "usage",
            Self::Events => "events",
        }
    }
}

/// The meter of one body.
#[derive(Debug)]
pub struct Meter {
    sse: bool,
    /// When the first content arrived.
    first: Option<Instant>,
    /// When the latest content arrived.
    last: Option<Instant>,
    /// SSE: the current event's bytes so far, when it spans chunks. JSON: the previous chunk's
    /// tail.
    pending: Vec<u8>,
    /// The current SSE event outgrew [`MAX_EVENT`]: skip to its end.
    skipping: bool,
    content_events: u64,
    usage: Option<u64>,
}

impl Meter {
    /// A meter for a body that is an SSE stream (`text/event-stream`) or not.
    pub fn new(sse: bool) -> Self {
        Self {
            sse,
            first: None,
            last: None,
            pending: Vec::new(),
            skipping: false,
            content_events: 0,
            usage: None,
        }
    }

    /// Looks at the next chunk, arrived `now`.
    pub fn chunk(&mut self, chunk: &[u8], now: Instant) -> Seen {
        let content = if self.sse {
            self.events(chunk)
        } else {
            self.json(chunk);
            !chunk.is_empty()
        };
        if !content {
            return Seen::default();
        }
        let seen = Seen {
            first: self.first.is_none(),
            gap: self.last.map(|last| now.saturating_duration_since(last)),
        };
        self.first.get_or_insert(now);
        self.last = Some(now);
        seen
    }

    /// When the first content arrived, if it did.
    pub fn first(&self) -> Option<Instant> {
        self.first
    }

    /// The tokens of the answer so far, and where the count comes from; `None` for a JSON body
    /// without `usage`.
    pub fn tokens(&self) -> Option<(u64, TokenSource)> {
        match (self.usage, self.sse) {
            (Some(n), _) => Some((n, TokenSource::Usage)),
            (None, true) => Some((self.content_events, TokenSource::Events)),
            (None, false) => None,
        }
    }

    /// Splits `chunk` into events; true when one of them carried content.
    fn events(&mut self, chunk: &[u8]) -> bool {
        let mut content = false;
        let mut rest = chunk;
        while let Some(end) = event_end(&self.pending, rest) {
            let (head, tail) = rest.split_at(end);
            if self.skipping {
                self.skipping = false;
            } else if self.pending.is_empty() {
                content |= self.event(head);
            } else {
                let mut event = std::mem::take(&mut self.pending);
                event.extend_from_slice(head);
                content |= self.event(&event);
                event.clear();
                self.pending = event;
            }
            self.pending.clear();
            rest = tail;
        }
        if !self.skipping {
            if self.pending.len() + rest.len() > MAX_EVENT {
                self.pending.clear();
                self.skipping = true;
            } else {
                self.pending.extend_from_slice(rest);
            }
        }
        content
    }

    /// One whole event (its blank line included); true when it carried content.
    fn event(&mut self, event: &[u8]) -> bool {
        // Lines start at 0 and after each newline: memchr visits the newlines only, where
        // `split` on '\n' compared every byte of every event (~2,000 instructions per token).
        let data = std::iter::once(0)
            .chain(memchr::memchr_iter(b'\n', event).map(|at| at + 1))
            .map(|start| &event[start..])
            .any(|line| line.starts_with(b"data:") && !line.starts_with(b"data: [DONE]"));
        if !data {
            return false;
        }
        if let Some(n) = completion_tokens(event) {
            self.usage = Some(n);
        }
        let content = has_content(event);
        self.content_events += u64::from(content);
        content
    }

    fn json(&mut self, chunk: &[u8]) {
        let mut joint = std::mem::take(&mut self.pending);
        joint.extend_from_slice(&chunk[..chunk.len().min(CARRY)]);
        if let Some(n) = completion_tokens(&joint).or_else(|| completion_tokens(chunk)) {
            self.usage = Some(n);
        }
        joint.clear();
        joint.extend_from_slice(&chunk[chunk.len().saturating_sub(CARRY)..]);
        self.pending = joint;
    }
}

/// Where in `rest` the event begun in `pending` ends (just past its blank line), if it does.
fn event_end(pending: &[u8], rest: &[u8]) -> Option<usize> {
    // A blank line: "\n\n" or "\r\n\r\n", possibly begun at the end of `pending`. Only the
    // newlines are visited (memchr), and from each one the bytes before it, past any '\r'.
    let before_rest = || pending.iter().rev().find(|&&b| b != b'\r').copied();
    memchr::memchr_iter(b'\n', rest)
        .find(|&at| {
            let previous = match rest[..at].iter().rposition(|&b| b != b'\r') {
                Some(i) => Some(rest[i]),
                None => before_rest(),
            };
            previous == Some(b'\n')
        })
        .map(|at| at + 1)
}

/// The number after `"completion_tokens":`, if `text` has one.
fn completion_tokens(text: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"completion_tokens\"";
    static FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(KEY));
    let at = FINDER.find(text)? + KEY.len();
    let rest = skip_ws(&text[at..]);
    let rest = skip_ws(rest.strip_prefix(b":")?);
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// Whether `text` has a `"content"` that is a non-empty string.
fn has_content(text: &[u8]) -> bool {
    const KEY: &[u8] = b"\"content\"";
    static FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(KEY));
    let mut from = 0;
    while let Some(at) = FINDER.find(&text[from..]) {
        let rest = skip_ws(&text[from + at + KEY.len()..]);
        if let Some(rest) = rest.strip_prefix(b":")
            && let Some(value) = skip_ws(rest).strip_prefix(b"\"")
            && value.first().is_some_and(|&b| b != b'"')
        {
            return true;
        }
        from += at + KEY.len();
    }
    false
}

fn skip_ws(text: &[u8]) -> &[u8] {
    let n = text.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &text[n..]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn token(text: &str) -> String {
        format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n")
    }

    #[test]
    fn a_stream_counts_content_events_and_prefers_usage() {
        let now = Instant::now();
        let later = |ms| now + Duration::from_millis(ms);
        let mut meter = Meter::new(true);
        let role =
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
        assert_eq!(meter.chunk(b": keep-alive\n\n", now), Seen::default());
        assert_eq!(meter.chunk(role.as_bytes(), later(1)), Seen::default());
        let first = meter.chunk(token("Hi").as_bytes(), later(10));
        assert!(first.first && first.gap.is_none());
        // Two tokens in one chunk, the second split across chunks.
        let two = format!("{}{}", token(" there"), token("!"));
        let (a, b) = two.split_at(two.len() - 7);
        let seen = meter.chunk(a.as_bytes(), later(30));
        assert_eq!(seen.gap, Some(Duration::from_millis(20)));
        meter.chunk(b.as_bytes(), later(31));
        assert_eq!(meter.tokens(), Some((3, TokenSource::Events)));
        let usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\": 4}}\r\n\r\n";
        meter.chunk(usage.as_bytes(), later(40));
        meter.chunk(b"data: [DONE]\n\n", later(40));
        assert_eq!(meter.tokens(), Some((4, TokenSource::Usage)));
        assert_eq!(meter.first(), Some(later(10)));
    }

    #[test]
    fn a_json_answer_finds_usage_across_chunks() {
        let body = br#"{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":3,"completion_tokens":12,"total_tokens":15}}"#;
        for split in [1, 60, 75, 90, body.len() - 1] {
            let mut meter = Meter::new(false);
            let now = Instant::now();
            let (a, b) = body.split_at(split);
            assert!(meter.chunk(a, now).first);
            meter.chunk(b, now);
            assert_eq!(
                meter.tokens(),
                Some((12, TokenSource::Usage)),
                "split {split}"
            );
        }
        assert_eq!(Meter::new(false).tokens(), None);
    }

    #[test]
    fn a_huge_event_is_skipped_not_kept() {
        let mut meter = Meter::new(true);
        let now = Instant::now();
        let huge = vec![b'x'; MAX_EVENT + 1];
        meter.chunk(b"data: ", now);
        meter.chunk(&huge, now);
        assert!(meter.pending.is_empty());
        meter.chunk(b"\n\n", now);
        meter.chunk(token("ok").as_bytes(), now);
        assert_eq!(meter.tokens(), Some((1, TokenSource::Events)));
    }
}
