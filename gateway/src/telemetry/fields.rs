//! The text log's field writer: what `tracing-subscriber`'s `DefaultFields` writes, byte for
//! byte, without its cost for the fields an access line is made of.
//!
//! An access line has some 18 fields, and `DefaultFields` writes each one through three trips
//! into `core::fmt`: the name painted by `nu-ansi-term` (even with colors off, a plain style is
//! still a `Display` that checks its prefix and suffix), the `=` painted the same way, and the
//! value as `{:?}`, which for a string escapes it one `char` at a time. Callgrind counted 24,500
//! instructions to format one access line, 14 % of all the gateway spends on a request
//! (`RUST_LOG=warn` takes the line away: 175,800 → 134,400 per request).
//!
//! Here a string made of printable ASCII without `"` or `\` (a route, a model, a request id, an
//! outcome) is written as `name="value"` with three `write_str`s, and an integer or a bool as
//! `name=value`: `{:?}` of those is exactly that. Everything else (the `message`, a string that
//! needs escaping, a `%` or `?` value, an error, a float) and every field on a terminal with
//! colors goes to `DefaultVisitor` itself, so nothing a person or a log pipeline reads changes;
//! the tests compare both writers on the same lines.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// `fmt::layer().fmt_fields(TextFields)`: the text format's fields, as `DefaultFields` writes
/// them.
#[derive(Debug, Default, Clone, Copy)]
pub struct TextFields;

impl<'a> MakeVisitor<Writer<'a>> for TextFields {
    type Visitor = TextVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> TextVisitor<'a> {
        TextVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// Writes one event's or span's fields.
#[derive(Debug)]
pub struct TextVisitor<'a> {
    writer: Writer<'a>,
    /// Nothing written yet: the next field needs no space before it.
    is_empty: bool,
    result: fmt::Result,
}

impl TextVisitor<'_> {
    /// Whether `field` may be written here: a plain name, on a writer without colors.
    /// `DefaultVisitor` writes `message` without its name, strips `r#`, and skips the `log.*`
    /// fields that carry a `log` record's metadata.
    fn plain(&self, field: &Field) -> bool {
        let name = field.name();
        !self.writer.has_ansi_escapes()
            && name != "message"
            && !name.starts_with("r#")
            && !name.starts_with("log.")
    }

    /// ` name=`, with the space only between fields.
    fn name(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::take(&mut self.is_empty) {
            self.writer.write_char(' ')?;
        }
        self.writer.write_str(field.name())?;
        self.writer.write_char('=')
    }

    /// Any other field: written by `DefaultVisitor`, which pads it as it would have. Nothing
    /// after a failed write, as `DefaultVisitor` does.
    fn default(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        // A skipped `log.*` field wrote nothing, not even the space.
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }

    /// An integer or a bool: `{:?}` of it is its `Display`, so a plain name is written here;
    /// any other goes to `DefaultVisitor` through `default`.
    fn number(
        &mut self,
        field: &Field,
        value: impl fmt::Display,
        default: impl FnOnce(&mut DefaultVisitor<'_>),
    ) {
        if !self.plain(field) {
            self.default(field, default);
        } else if self.result.is_ok() {
            self.result = self
                .name(field)
                .and_then(|()| write!(self.writer, "{value}"));
        }
    }
}

/// Whether `{:?}` of `value` is `value` in quotes: printable ASCII, no `"` or `\` to escape.
fn quotes_only(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !(self.plain(field) && quotes_only(value)) {
            self.default(field, |v| v.record_str(field, value));
        } else if self.result.is_ok() {
            self.result = self.name(field).and_then(|()| {
                self.writer.write_char('"')?;
                self.writer.write_str(value)?;
                self.writer.write_char('"')
            });
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, value, |v| v.record_u64(field, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, value, |v| v.record_i64(field, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.number(field, value, |v| v.record_bool(field, value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.default(field, |v| v.record_f64(field, value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.default(field, |v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.default(field, |v| v.record_debug(field, value));
    }
}

impl VisitOutput<fmt::Result> for TextVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for TextVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::TextFields;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("buffer").clone()).expect("utf-8")
        }
    }

    #[derive(Debug)]
    struct Failed;
    impl std::fmt::Display for Failed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("upstream \"reset\"\n")
        }
    }
    impl std::error::Error for Failed {}

    /// Lines of every shape the gateway writes, and the ones it would have to escape.
    fn lines() {
        let root = tracing::info_span!("gateway", mode = "fixed");
        let _root = root.enter();
        let request = tracing::info_span!("request", request_id = "req-01H", n = 1u64);
        request.record("n", 2u64);
        let _request = request.enter();
        let (none, some): (Option<&str>, Option<u64>) = (None, Some(7));
        tracing::info!(
            request_id = "abc",
            method = %"POST",
            route = "/v1/chat/completions",
            model = none,
            status = some,
            attempts = 2u32,
            ok = true,
            delta = -3i64,
            ratio = 0.5f64,
            "{}",
            "request relayed"
        );
        for tricky in [
            "",
            "say \"hi\"",
            "C:\\path",
            "line\nbreak",
            "caf\u{e9}",
            "\x1b[31m",
        ] {
            tracing::warn!(model = tricky, "message with {tricky:?}");
        }
        tracing::warn!(error = &Failed as &dyn std::error::Error, value = ?[1, 2], "failed");
        tracing::info!(r#type = "raw", "log.target" = "skipped", after = "x");
        tracing::info!(first = "x", "log.line" = 3u64, last = 4u64);
        tracing::info!("only a message");
    }

    fn written(ansi: bool, ours: bool) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let layer = fmt::layer()
            .without_time()
            .with_ansi(ansi)
            .with_writer(move || writer.clone());
        let registry = tracing_subscriber::registry();
        if ours {
            tracing::subscriber::with_default(registry.with(layer.fmt_fields(TextFields)), lines);
        } else {
            tracing::subscriber::with_default(registry.with(layer), lines);
        }
        buffer.text()
    }

    #[test]
    fn text_fields_write_what_default_fields_write() {
        for ansi in [false, true] {
            let (default, ours) = (written(ansi, false), written(ansi, true));
            assert!(default.lines().count() >= 10, "{default}");
            if !ansi {
                assert!(
                    default.contains(" route=\"/v1/chat/completions\" "),
                    "{default}"
                );
            }
            assert_eq!(ours, default, "ansi {ansi}");
        }
    }
}
