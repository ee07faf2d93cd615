//! Response-side filtering on routes with `filter_tools_list`: what an upstream answer holds,
//! and whether the gateway can read it at all.
//!
//! Sits on the way back: `proxy`'s response hooks hand every answer on a filter route to a
//! [`Judge`], whatever the request was. The client controls the request shape (a batch, a GET
//! stream, a resumption, a method spelled so that only the upstream understands it), so the
//! bytes of the answer decide, not the request:
//!
//! - an SSE stream (`text/event-stream`) is filtered event by event as it flows
//!   ([`SseFilter`]; an event is held until its blank line, at most [`EVENT_LIMIT`] bytes);
//! - any other answer, whatever its content type and status, is buffered whole (at most
//!   [`BODY_LIMIT`]) and judged as JSON ([`filter_json`]);
//! - in both, every JSON-RPC response that carries a tool list (`result.tools`), alone or in a
//!   batch, loses the tools the caller could not call;
//! - an answer the gateway cannot read (content-encoded, a byte order mark, not JSON, larger
//!   than the buffer, members whose names differ only in case, a `tools` that is not a list, an
//!   SSE line that is not an SSE field) is replaced by the JSON-RPC error of
//!   [`UnreadableAnswer`]: never passed through, never truncated.
//!
//! Everything here is plain data in, bytes out: no pingora session, so it is unit-tested
//! directly.

use bytes::Bytes;
use pingora_http::ResponseHeader;
use serde_json::{Map, Value};

use crate::error::UnreadableAnswer;
use crate::mcp::json::Strict;

/// Largest answer buffered to be judged whole (a JSON answer, any content type).
pub const BODY_LIMIT: usize = 8 * 1024 * 1024;
/// Largest SSE event (or line) held to be judged: one `tools/list` result fits many times.
pub const EVENT_LIMIT: usize = 8 * 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why an answer could not be read. Each is refused the same way; the reason goes to the
/// client's error message and to the `mcpgate_answers_refused_total` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    Encoded,
    TooLarge,
    EventTooLarge,
    Bom,
    NotJson,
    Ambiguous,
    NotAList,
    NotSse,
}

impl Unreadable {
    /// Every `reason` label, for the series exposed at zero from the start.
    pub const REASONS: &'static [&'static str] = &[
        "encoded",
        "too_large",
        "event_too_large",
        "bom",
        "not_json",
        "ambiguous",
        "not_a_list",
        "not_sse",
    ];

    /// The `reason` label of `mcpgate_upstream_answers_refused_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Unreadable::Encoded => "encoded",
            Unreadable::TooLarge => "too_large",
            Unreadable::EventTooLarge => "event_too_large",
            Unreadable::Bom => "bom",
            Unreadable::NotJson => "not_json",
            Unreadable::Ambiguous => "ambiguous",
            Unreadable::NotAList => "not_a_list",
            Unreadable::NotSse => "not_sse",
        }
    }

    /// The message of the JSON-RPC error the client gets.
    pub fn message(self) -> &'static str {
        match self {
            Unreadable::Encoded => {
                "the upstream answer is content-encoded and the gateway must read it to filter it"
            }
            Unreadable::TooLarge => {
                "the upstream answer is larger than the 8 MiB the gateway reads to filter it"
            }
            Unreadable::EventTooLarge => {
                "an event of the upstream stream is larger than the 8 MiB the gateway reads to filter it"
            }
            Unreadable::Bom => "the upstream answer starts with a byte order mark",
            Unreadable::NotJson => "the upstream answer is not JSON",
            Unreadable::Ambiguous => {
                "the upstream answer repeats a member, or has members whose names differ only in case"
            }
            Unreadable::NotAList => "the upstream answer has a tools member that is not a list",
            Unreadable::NotSse => "the upstream stream has a line that is not an SSE field",
        }
    }

    fn answer(self, id: Option<Box<str>>) -> UnreadableAnswer {
        UnreadableAnswer {
            id,
            message: self.message(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One JSON document
// ---------------------------------------------------------------------------------------------

/// The one member of `obj` named `name` in any letter case (clients in some languages match
/// member names case-insensitively). Two such members: ambiguous.
fn member(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, Unreadable> {
    let mut found = None;
    for k in obj.keys().filter(|k| k.eq_ignore_ascii_case(name)) {
        if found.is_some() {
            return Err(Unreadable::Ambiguous);
        }
        found = Some(k.clone());
    }
    Ok(found)
}

/// A list an answer may carry: the member of `result` that holds it, and the member of each
/// item that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `tools/list`: `tools`, by `name`.
    Tools,
    /// `resources/list`: `resources`, by `uri`.
    Resources,
    /// `resources/templates/list`: `resourceTemplates`, by `uriTemplate`.
    ResourceTemplates,
    /// `prompts/list`: `prompts`, by `name`.
    Prompts,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Tools,
        Kind::Resources,
        Kind::ResourceTemplates,
        Kind::Prompts,
    ];

    /// The member of `result` holding the list.
    pub fn member(self) -> &'static str {
        match self {
            Kind::Tools => "tools",
            Kind::Resources => "resources",
            Kind::ResourceTemplates => "resourceTemplates",
            Kind::Prompts => "prompts",
        }
    }

    /// The member of an item that names it.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Tools | Kind::Prompts => "name",
            Kind::Resources => "uri",
            Kind::ResourceTemplates => "uriTemplate",
        }
    }
}

/// What the judge asks of the route and the caller.
pub trait View {
    /// Whether lists of `kind` are filtered for the caller (their answers are then private).
    fn filters(&self, kind: Kind) -> bool;
    /// Whether the caller may see an item of a filtered list, named `name`.
    fn keep(&self, kind: Kind, name: &str, item: &Map<String, Value>) -> bool;
    /// Every tool of a tool list, filtered or not, before any filtering.
    fn saw_tool(&self, _name: &str, _item: &Map<String, Value>) {}
    /// The largest `ttlMs` a private answer may keep: what is left of the caller's token.
    fn ttl_cap_ms(&self) -> Option<u64> {
        None
    }
}

/// A plain name filter: tool lists only (the filter of a route with `filter_tools_list`
/// alone, and of the tests).
impl<F: Fn(&str) -> bool> View for F {
    fn filters(&self, kind: Kind) -> bool {
        kind == Kind::Tools
    }
    fn keep(&self, _kind: Kind, name: &str, _item: &Map<String, Value>) -> bool {
        self(name)
    }
}

/// A filtered list's answer may be reused only by the same caller (SEP-2549,
/// server/utilities/caching): `cacheScope` becomes `"private"`, and a `ttlMs` is bounded by
/// the caller's token (a negative or non-numeric one becomes 0). Members spelled in another
/// letter case are replaced.
fn make_private(result: &mut Map<String, Value>, cap: Option<u64>) -> Result<(), Unreadable> {
    if let Some(k) = member(result, "cacheScope")? {
        result.remove(&k);
    }
    result.insert("cacheScope".into(), Value::from("private"));
    if let Some(k) = member(result, "ttlMs")? {
        let ttl = result.remove(&k).and_then(|v| v.as_f64()).unwrap_or(0.0);
        let ttl = if ttl.is_finite() && ttl > 0.0 {
            ttl.min(u64::MAX as f64) as u64
        } else {
            0
        };
        result.insert("ttlMs".into(), Value::from(cap.map_or(ttl, |c| ttl.min(c))));
    }
    Ok(())
}

/// Filter one JSON-RPC message in place. `Ok(true)` when it was changed (it carried a list
/// the route filters).
///
/// A list is a `result` object with one of the [`Kind`] members, unless the result also has
/// `content`: that is a `tools/call` result, whose output is the tool's and is not
/// rewritten. A filtered list that is not an array cannot be judged; nor can an item without
/// a string name, which is removed. Every tool of a tool list is shown to
/// [`View::saw_tool`] first, filtered or not.
fn filter_message(msg: &mut Value, view: &dyn View) -> Result<bool, Unreadable> {
    let Some(obj) = msg.as_object_mut() else {
        return Ok(false);
    };
    let Some(rk) = member(obj, "result")? else {
        return Ok(false);
    };
    let Some(result) = obj.get_mut(&rk).and_then(Value::as_object_mut) else {
        return Ok(false);
    };
    if member(result, "content")?.is_some() {
        return Ok(false);
    }
    let mut changed = false;
    for kind in Kind::ALL {
        let Some(lk) = member(result, kind.member())? else {
            continue;
        };
        let filtered = view.filters(kind);
        let Some(items) = result.get_mut(&lk).and_then(Value::as_array_mut) else {
            if filtered {
                return Err(Unreadable::NotAList);
            }
            continue;
        };
        let visible = |t: &Value| -> bool {
            let Some(o) = t.as_object() else {
                return false;
            };
            match member(o, kind.key()) {
                Ok(Some(k)) => o
                    .get(&k)
                    .and_then(Value::as_str)
                    .is_some_and(|n| view.keep(kind, n, o)),
                _ => false,
            }
        };
        if kind == Kind::Tools {
            for t in items.iter() {
                if let Some(o) = t.as_object() {
                    if let Some(n) = o.get("name").and_then(Value::as_str) {
                        view.saw_tool(n, o);
                    }
                }
            }
        }
        if filtered {
            items.retain(visible);
            changed = true;
        }
    }
    if changed {
        make_private(result, view.ttl_cap_ms())?;
    }
    Ok(changed)
}

/// What [`filter_json`] made of a document.
#[derive(Debug, PartialEq, Eq)]
pub enum Judged {
    /// No tool list in it: forward the original bytes.
    Unchanged,
    /// It held a list the route filters: forward these bytes (re-serialized, compact).
    Filtered(Vec<u8>),
}

fn is_json_space(b: &u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Whether a client could take `doc` for a JSON object or array, the only shapes that carry a
/// list: decoded as a client decodes it (invalid UTF-8 replaced, as the SSE and fetch
/// decoders do), its first character past any whitespace and byte order marks opens one.
/// What the gateway cannot read may pass unread only when this is false (an error page, the
/// legacy transport's `endpoint` URL): a document that looks like JSON and is not the JSON the
/// gateway reads (invalid UTF-8 or a lone surrogate in a string, a repeated member, trailing
/// bytes, a truncated end) is one that some client may still read a list from.
fn looks_like_json(doc: &[u8]) -> bool {
    String::from_utf8_lossy(doc)
        .trim_start_matches(|c: char| c.is_whitespace() || c == '\u{FEFF}')
        .starts_with(['{', '['])
}

/// Judge one JSON document: a JSON-RPC message or a batch (array) of them.
pub fn filter_json(doc: &[u8], keep: &dyn View) -> Result<Judged, Unreadable> {
    if doc.starts_with(BOM) {
        return Err(Unreadable::Bom);
    }
    if doc.iter().all(is_json_space) {
        return Ok(Judged::Unchanged);
    }
    let Strict(mut v) = serde_json::from_slice(doc).map_err(|e| {
        if e.to_string().contains("repeated member") {
            Unreadable::Ambiguous
        } else {
            Unreadable::NotJson
        }
    })?;
    let listed = match &mut v {
        Value::Array(items) => {
            let mut any = false;
            for m in items {
                any |= filter_message(m, keep)?;
            }
            any
        }
        m => filter_message(m, keep)?,
    };
    if !listed {
        return Ok(Judged::Unchanged);
    }
    serde_json::to_vec(&v)
        .map(Judged::Filtered)
        .map_err(|_| Unreadable::NotJson)
}

// ---------------------------------------------------------------------------------------------
// An SSE stream, event by event
// ---------------------------------------------------------------------------------------------

/// A line of the event being held: where it sits in `SseFilter::event`.
struct Line {
    start: usize,
    /// End of the line's content (its terminator follows, up to `end`).
    content_end: usize,
    end: usize,
    data: bool,
}

/// A streaming SSE filter: feed it the stream in pieces of any size; it returns what may be
/// forwarded now. Events are held until their blank line and judged whole; comment lines
/// between events pass at once (keep-alives keep their timing). Lines may end in CRLF, LF or
/// CR, and a CRLF may be split between pieces. Only the SSE fields (`data`, `event`, `id`,
/// `retry`) and comments are accepted: any other line means the body is not the SSE stream
/// its content type says, and is refused.
#[derive(Default)]
pub struct SseFilter {
    /// The current line's content, without its terminator.
    line: Vec<u8>,
    /// The held event, raw.
    event: Vec<u8>,
    lines: Vec<Line>,
    /// `data` values joined by LF (each followed by one, per the SSE grammar).
    data: Vec<u8>,
    has_data: bool,
    /// The `event` field's value, when given.
    kind: Option<Vec<u8>>,
    /// The last byte seen was CR: an LF right after it belongs to the same terminator.
    after_cr: bool,
    /// Past the first line (a BOM opening the stream is part of the SSE grammar).
    started: bool,
    failed: bool,
}

impl SseFilter {
    pub fn new() -> SseFilter {
        SseFilter::default()
    }

    /// Feed a piece of the stream; append to `out` what can be forwarded now.
    pub fn push(
        &mut self,
        mut chunk: &[u8],
        keep: &dyn View,
        out: &mut Vec<u8>,
    ) -> Result<(), Unreadable> {
        if self.failed {
            return Ok(());
        }
        while !chunk.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if chunk[0] == b'\n' {
                    // The LF of a CRLF split between pieces: it ends the line already ended.
                    match self.lines.last_mut() {
                        Some(l) if l.end == self.event.len() => {
                            self.event.push(b'\n');
                            l.end += 1;
                        }
                        _ => out.push(b'\n'),
                    }
                    chunk = &chunk[1..];
                    continue;
                }
            }
            match chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.line.extend_from_slice(chunk);
                    if self.event.len() + self.line.len() > EVENT_LIMIT {
                        return Err(self.fail(Unreadable::EventTooLarge));
                    }
                    return Ok(());
                }
                Some(i) => {
                    self.line.extend_from_slice(&chunk[..i]);
                    let cr = chunk[i] == b'\r';
                    let crlf = cr && chunk.get(i + 1) == Some(&b'\n');
                    let term_len = if crlf { 2 } else { 1 };
                    self.after_cr = cr && !crlf && i + 1 == chunk.len();
                    let term = &chunk[i..i + term_len];
                    self.end_line(term, keep, out)?;
                    chunk = &chunk[i + term_len..];
                }
            }
        }
        Ok(())
    }

    /// The stream ended: judge what is held (an event without its blank line is judged as if
    /// it had one).
    pub fn finish(&mut self, keep: &dyn View, out: &mut Vec<u8>) -> Result<(), Unreadable> {
        if self.failed {
            return Ok(());
        }
        if !self.line.is_empty() {
            self.end_line(b"", keep, out)?;
        }
        if !self.event.is_empty() {
            self.dispatch(keep, out)?;
        }
        Ok(())
    }

    fn fail(&mut self, why: Unreadable) -> Unreadable {
        self.failed = true;
        self.line = Vec::new();
        self.event = Vec::new();
        self.lines.clear();
        self.data = Vec::new();
        why
    }

    fn end_line(
        &mut self,
        term: &[u8],
        keep: &dyn View,
        out: &mut Vec<u8>,
    ) -> Result<(), Unreadable> {
        let line = std::mem::take(&mut self.line);
        let first = !self.started;
        self.started = true;
        let content: &[u8] = if first {
            line.strip_prefix(BOM).unwrap_or(&line)
        } else {
            &line
        };
        if content.is_empty() {
            if self.event.is_empty() && line.is_empty() {
                // A blank line with nothing held: nothing to dispatch.
                out.extend_from_slice(term);
                return Ok(());
            }
            self.push_line(&line, term, false);
            return self.dispatch(keep, out);
        }
        if self.event.len() + line.len() + term.len() > EVENT_LIMIT {
            return Err(self.fail(Unreadable::EventTooLarge));
        }
        if content[0] == b':' {
            if self.event.is_empty() {
                // A comment between events (a keep-alive): forward it now.
                out.extend_from_slice(&line);
                out.extend_from_slice(term);
            } else {
                self.push_line(&line, term, false);
            }
            return Ok(());
        }
        let (name, value) = match content.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &content[i + 1..];
                (&content[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (content, &b""[..]),
        };
        let data = match name {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
                self.has_data = true;
                true
            }
            b"event" => {
                self.kind = Some(value.to_vec());
                false
            }
            b"id" | b"retry" => false,
            _ => return Err(self.fail(Unreadable::NotSse)),
        };
        self.push_line(&line, term, data);
        Ok(())
    }

    fn push_line(&mut self, line: &[u8], term: &[u8], data: bool) {
        let start = self.event.len();
        self.event.extend_from_slice(line);
        let content_end = self.event.len();
        self.event.extend_from_slice(term);
        self.lines.push(Line {
            start,
            content_end,
            end: self.event.len(),
            data,
        });
    }

    /// Judge the held event and forward it (filtered when it holds a tool list).
    fn dispatch(&mut self, keep: &dyn View, out: &mut Vec<u8>) -> Result<(), Unreadable> {
        let event = std::mem::take(&mut self.event);
        let lines = std::mem::take(&mut self.lines);
        let mut data = std::mem::take(&mut self.data);
        let has_data = std::mem::replace(&mut self.has_data, false);
        // An empty `event` field leaves the type `message` (the SSE dispatch rules).
        let message = self
            .kind
            .take()
            .is_none_or(|k| k.is_empty() || k == b"message");
        if !has_data {
            out.extend_from_slice(&event);
            return Ok(());
        }
        data.pop(); // the LF after the last value
        match filter_json(&data, keep) {
            Ok(Judged::Unchanged) => out.extend_from_slice(&event),
            Ok(Judged::Filtered(json)) => {
                let mut wrote = false;
                for l in &lines {
                    if !l.data {
                        out.extend_from_slice(&event[l.start..l.end]);
                    } else if !wrote {
                        out.extend_from_slice(b"data: ");
                        out.extend_from_slice(&json);
                        out.extend_from_slice(&event[l.content_end..l.end]);
                        wrote = true;
                    }
                }
            }
            // An event of another type is not a JSON-RPC message to MCP clients (they read
            // only `message`, the default): its data need not be JSON. But data that looks
            // like JSON is judged as JSON whatever the type: unreadable, it is refused.
            Err(_) if !message && !looks_like_json(&data) => out.extend_from_slice(&event),
            Err(e) => return Err(self.fail(e)),
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// One answer, from its head to its end
// ---------------------------------------------------------------------------------------------

enum Mode {
    /// Nothing to judge (no body).
    Pass,
    /// Buffered whole, judged at its end.
    Json(Vec<u8>),
    Sse(SseFilter),
    /// Refused from its head: the error body goes out in place of the first piece.
    Replace(Option<Bytes>),
    /// Refused after its head: nothing more goes out.
    Ended,
    /// Passed on as it comes, a copy kept (at most [`BODY_LIMIT`]; `None` past it) and read
    /// at its end only to learn the tools it lists (`true`: an SSE stream).
    Learn(Option<Vec<u8>>, bool),
}

/// What the caller does after a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The stream was refused mid-way (its error event is in this piece): close it.
    End,
}

/// The judgment of one answer on a filter route.
pub struct Judge {
    mode: Mode,
    /// A non-2xx answer whose body is not JSON at all passes (an upstream's error page or
    /// "session not found": clients treat those as HTTP errors, not JSON-RPC answers).
    lenient: bool,
    /// The request's JSON-RPC id, for the error.
    id: Option<Box<str>>,
}

fn has_body(resp: &ResponseHeader, head_request: bool) -> bool {
    let s = resp.status.as_u16();
    let declared_empty = resp
        .headers
        .get(http::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0");
    !(head_request || (100..200).contains(&s) || s == 204 || s == 304 || declared_empty)
}

/// Whether the answer is an SSE stream by its content type.
pub fn is_event_stream(resp: &ResponseHeader) -> bool {
    resp.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
}

impl Judge {
    /// Judge an answer's head. It may be rewritten: replaced by the 502 error when the body
    /// cannot be read (`Err` tells why), or stripped of its `Content-Length` when the body may
    /// change. `head_request`: the request was HEAD (no body follows).
    pub fn start(
        resp: &mut ResponseHeader,
        head_request: bool,
        id: Option<Box<str>>,
    ) -> (Judge, Option<Unreadable>) {
        let lenient = !resp.status.is_success();
        let mut judge = Judge {
            mode: Mode::Pass,
            lenient,
            id,
        };
        if !has_body(resp, head_request) {
            return (judge, None);
        }
        let encoded = resp
            .headers
            .get_all(http::header::CONTENT_ENCODING)
            .iter()
            .any(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"));
        let sse = is_event_stream(resp);
        let declared = resp
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let refused = if encoded {
            Some(Unreadable::Encoded)
        } else if !sse && declared.is_some_and(|n| n > BODY_LIMIT as u64) {
            Some(Unreadable::TooLarge)
        } else {
            None
        };
        if let Some(why) = refused {
            let (h, body) = crate::respond::unreadable(&why.answer(judge.id.clone()));
            *resp = h;
            judge.mode = Mode::Replace(Some(body));
            return (judge, Some(why));
        }
        resp.remove_header(&http::header::CONTENT_LENGTH);
        // HTTP/1.1 framing for a body whose length is known only at its end (pingora drops
        // it for HTTP/2).
        crate::respond::set_header(resp, http::header::TRANSFER_ENCODING, "chunked", false);
        judge.mode = if sse {
            Mode::Sse(SseFilter::new())
        } else {
            Mode::Json(Vec::new())
        };
        (judge, None)
    }

    /// Read an answer only to learn the tools it lists ([`View::saw_tool`]), changing
    /// nothing: its head and every piece pass as they are, and an answer the gateway cannot
    /// read teaches it nothing. For the answers to `tools/list` on routes that filter
    /// nothing.
    pub fn learn(resp: &ResponseHeader, head_request: bool) -> Judge {
        let readable = has_body(resp, head_request)
            && resp.status.is_success()
            && !resp
                .headers
                .get_all(http::header::CONTENT_ENCODING)
                .iter()
                .any(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"));
        Judge {
            mode: if readable {
                Mode::Learn(Some(Vec::new()), is_event_stream(resp))
            } else {
                Mode::Pass
            },
            lenient: true,
            id: None,
        }
    }

    /// Judge a piece of the body in place: `body` becomes what the client gets now. `Err`
    /// tells why the answer was refused here (it is refused once; the error is in `body`).
    pub fn body(
        &mut self,
        body: &mut Option<Bytes>,
        end: bool,
        keep: &dyn View,
    ) -> (Flow, Option<Unreadable>) {
        match &mut self.mode {
            Mode::Pass => (Flow::Continue, None),
            Mode::Replace(error) => {
                *body = error.take();
                (Flow::Continue, None)
            }
            Mode::Ended => {
                *body = None;
                (Flow::Continue, None)
            }
            Mode::Learn(copy, sse) => {
                if let (Some(buf), Some(piece)) = (copy.as_mut(), body.as_ref()) {
                    if buf.len() + piece.len() > BODY_LIMIT {
                        *copy = None;
                    } else {
                        buf.extend_from_slice(piece);
                    }
                }
                if end {
                    if let Some(buf) = copy.take() {
                        // Nothing filtered: the output is the input; only the tools seen count.
                        if *sse {
                            let mut f = SseFilter::new();
                            let mut sink = Vec::new();
                            let _ = f
                                .push(&buf, keep, &mut sink)
                                .and_then(|()| f.finish(keep, &mut sink));
                        } else {
                            let _ = filter_json(&buf, keep);
                        }
                    }
                }
                (Flow::Continue, None)
            }
            Mode::Json(buf) => {
                if let Some(piece) = body.take() {
                    if buf.len() + piece.len() > BODY_LIMIT {
                        return self.refuse_json(body, Unreadable::TooLarge);
                    }
                    buf.extend_from_slice(&piece);
                }
                if !end {
                    return (Flow::Continue, None);
                }
                let doc = std::mem::take(buf);
                match filter_json(&doc, keep) {
                    Ok(Judged::Unchanged) => *body = Some(Bytes::from(doc)),
                    Ok(Judged::Filtered(out)) => *body = Some(Bytes::from(out)),
                    Err(Unreadable::NotJson) if self.lenient && !looks_like_json(&doc) => {
                        *body = Some(Bytes::from(doc))
                    }
                    Err(e) => return self.refuse_json(body, e),
                }
                self.mode = Mode::Ended;
                (Flow::Continue, None)
            }
            Mode::Sse(f) => {
                let mut out = Vec::new();
                let mut r = match body.as_deref() {
                    Some(piece) => f.push(piece, keep, &mut out),
                    None => Ok(()),
                };
                if r.is_ok() && end {
                    r = f.finish(keep, &mut out);
                }
                match r {
                    Ok(()) => {
                        *body = Some(Bytes::from(out));
                        (Flow::Continue, None)
                    }
                    Err(e) => {
                        out.extend_from_slice(&crate::respond::unreadable_event(
                            &e.answer(self.id.clone()),
                        ));
                        *body = Some(Bytes::from(out));
                        self.mode = Mode::Ended;
                        (Flow::End, Some(e))
                    }
                }
            }
        }
    }

    /// A JSON answer refused after its head was sent: its status stays, its body is the error
    /// (complete JSON), and the rest of the upstream's body is dropped.
    fn refuse_json(
        &mut self,
        body: &mut Option<Bytes>,
        why: Unreadable,
    ) -> (Flow, Option<Unreadable>) {
        *body = Some(crate::respond::unreadable_body(
            &why.answer(self.id.clone()),
        ));
        self.mode = Mode::Ended;
        (Flow::Continue, Some(why))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    /// `REASONS` lists every variant's label (the series exposed from the start).
    #[test]
    fn reasons_cover_every_variant() {
        use Unreadable::*;
        let all = [
            Encoded,
            TooLarge,
            EventTooLarge,
            Bom,
            NotJson,
            Ambiguous,
            NotAList,
            NotSse,
        ];
        let labels: Vec<&str> = all.iter().map(|u| u.reason()).collect();
        assert_eq!(labels, Unreadable::REASONS);
    }

    fn keep(n: &str) -> bool {
        !n.starts_with("deny")
    }

    const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"read","inputSchema":{"type":"object"}},{"name":"deny_rm"},{"title":"no name"},"odd",{"name":7}],"nextCursor":"c"}}"#;

    fn names(v: &Value) -> Vec<&str> {
        v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect()
    }

    fn filtered(doc: &[u8]) -> Value {
        match filter_json(doc, &keep).unwrap() {
            Judged::Filtered(b) => serde_json::from_slice(&b).unwrap(),
            Judged::Unchanged => panic!("not filtered: {}", String::from_utf8_lossy(doc)),
        }
    }

    #[test]
    fn a_list_loses_what_the_caller_cannot_call() {
        let v = filtered(LIST.as_bytes());
        // tools without a string name cannot be judged: removed
        assert_eq!(names(&v), ["read"]);
        assert_eq!(v["result"]["nextCursor"], "c");
        assert_eq!(v["id"], 1);
        assert_eq!(v["result"]["tools"][0]["inputSchema"]["type"], "object");
    }

    /// A route filtering resources and prompts (not tools), hiding names with `secret`,
    /// with 60 s left on the caller's token.
    struct Lists;
    impl View for Lists {
        fn filters(&self, kind: Kind) -> bool {
            kind != Kind::Tools
        }
        fn keep(&self, _kind: Kind, name: &str, _item: &Map<String, Value>) -> bool {
            !name.contains("secret")
        }
        fn ttl_cap_ms(&self) -> Option<u64> {
            Some(60_000)
        }
    }

    #[test]
    fn resource_and_prompt_lists_are_filtered_and_made_private() {
        let judge = |doc: &str| filter_json(doc.as_bytes(), &Lists);
        for (member, key) in [
            ("resources", "uri"),
            ("resourceTemplates", "uriTemplate"),
            ("prompts", "name"),
        ] {
            let doc = format!(
                r#"{{"jsonrpc":"2.0","id":1,"result":{{"{member}":[{{"{key}":"a"}},{{"{key}":"secret"}},{{"other":"x"}}],"ttlMs":600000,"cacheScope":"public"}}}}"#
            );
            let Judged::Filtered(b) = judge(&doc).unwrap() else {
                panic!("{member} not filtered")
            };
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(
                v["result"][member],
                serde_json::json!([{key: "a"}]),
                "{member}"
            );
            assert_eq!(v["result"]["cacheScope"], "private");
            assert_eq!(v["result"]["ttlMs"], 60_000, "bounded by the token");
            // Not an array: refused; a cacheScope spelled twice: ambiguous.
            let bad = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"{member}":{{}}}}}}"#);
            assert!(matches!(judge(&bad), Err(Unreadable::NotAList)), "{member}");
            let twice = format!(
                r#"{{"jsonrpc":"2.0","id":1,"result":{{"{member}":[],"cacheScope":"public","CacheScope":"public"}}}}"#
            );
            assert!(judge(&twice).is_err(), "{member}");
        }
        // A shorter ttlMs is kept, a negative one becomes 0; none stays none.
        for (ttl, want) in [("5", Value::from(5)), ("-3", Value::from(0))] {
            let doc =
                format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"prompts":[],"ttlMs":{ttl}}}}}"#);
            let Judged::Filtered(b) = judge(&doc).unwrap() else {
                panic!()
            };
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["result"]["ttlMs"], want);
        }
        let Judged::Filtered(b) =
            judge(r#"{"jsonrpc":"2.0","id":1,"result":{"prompts":[]}}"#).unwrap()
        else {
            panic!()
        };
        assert!(serde_json::from_slice::<Value>(&b).unwrap()["result"]
            .get("ttlMs")
            .is_none());
        // A list the route does not filter passes byte for byte, public scope and all.
        let tools = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"secret"}],"cacheScope":"public"}}"#;
        assert!(matches!(judge(tools), Ok(Judged::Unchanged)));
    }

    #[test]
    fn batches_are_judged_element_by_element() {
        let batch = format!(r#"[{{"jsonrpc":"2.0","id":0,"result":{{}}}},{LIST}]"#);
        let v = filtered(batch.as_bytes());
        assert_eq!(v[0]["id"], 0);
        assert_eq!(names(&v[1]), ["read"]);
        let v = filtered(format!("[{LIST}]").as_bytes());
        assert_eq!(names(&v[0]), ["read"]);
        // a result whose tools hide behind another letter case is a list too
        let v = filtered(
            br#"{"jsonrpc":"2.0","id":1,"Result":{"TOOLS":[{"Name":"deny_x"},{"NAME":"ok"}]}}"#,
        );
        assert_eq!(v["Result"]["TOOLS"].as_array().unwrap().len(), 1);
        assert_eq!(v["Result"]["TOOLS"][0]["NAME"], "ok");
    }

    #[test]
    fn answers_without_a_list_are_forwarded_byte_for_byte() {
        for doc in [
            &br#"{"jsonrpc":"2.0",  "id":7 ,"result":{"content":[{"type":"text","text":"caf\u00e9"}],"tools":[{"name":"deny_x"}]}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"result":{"tool":[]}}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":"tools"}"#,
            br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#,
            br#"[1,"a",null,[{"result":{"tools":[{"name":"deny_nested"}]}}]]"#,
            b"42",
            b"",
            b" \r\n\t",
        ] {
            assert_eq!(filter_json(doc, &keep), Ok(Judged::Unchanged), "{doc:?}");
        }
    }

    #[test]
    fn what_cannot_be_read_is_refused() {
        let bom = [BOM, LIST.as_bytes()].concat();
        assert_eq!(filter_json(&bom, &keep), Err(Unreadable::Bom));
        for doc in [
            &b"{not json"[..],
            b"<html>",
            &LIST.as_bytes()[..40],
            b"\xFF\xFE{}",
        ] {
            assert_eq!(filter_json(doc, &keep), Err(Unreadable::NotJson), "{doc:?}");
        }
        for doc in [
            &br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"deny_x"}]},"result":{"x":1}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"Tools":[{"name":"deny_x"}]}}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]},"RESULT":{"tools":[{"name":"deny_x"}]}}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","arguments":{"k":1,"k":2}}]}}"#,
        ] {
            assert_eq!(filter_json(doc, &keep), Err(Unreadable::Ambiguous), "{}", String::from_utf8_lossy(doc));
        }
        for doc in [
            &br#"{"jsonrpc":"2.0","id":1,"result":{"tools":{"name":"deny_x"}}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":"deny_x"}}"#,
        ] {
            assert_eq!(filter_json(doc, &keep), Err(Unreadable::NotAList));
        }
    }

    fn sse_all(pieces: &[&[u8]]) -> Result<String, Unreadable> {
        let mut f = SseFilter::new();
        let mut out = Vec::new();
        for p in pieces {
            f.push(p, &keep, &mut out)?;
        }
        f.finish(&keep, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn sse_events_are_filtered_and_the_rest_kept_byte_for_byte() {
        let note = "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\r\n\r\n";
        let list = format!("event: message\r\nid: 42\r\ndata: {LIST}\r\n\r\n");
        let out = sse_all(&[note.as_bytes(), b": keep-alive\r\n", list.as_bytes()]).unwrap();
        assert!(out.starts_with(note), "{out:?}");
        assert!(out.contains(": keep-alive\r\n"), "{out:?}");
        assert!(!out.contains("deny_rm"), "{out:?}");
        assert!(
            out.contains("event: message\r\nid: 42\r\ndata: {"),
            "{out:?}"
        );
        assert!(out.ends_with("}\r\n\r\n"), "{out:?}");
        // multi-line data is joined with LF; LF-only and CR-only streams too
        let split = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\ndata: \"result\":{\"tools\":[{\"name\":\"deny_x\"},{\"name\":\"ok\"}]}}\n\n";
        let out = sse_all(&[split.as_bytes()]).unwrap();
        assert!(!out.contains("deny_x") && out.contains("\"ok\""), "{out:?}");
        assert_eq!(out.matches("data:").count(), 1, "{out:?}");
        let cr = format!("data: {LIST}\r\r");
        let out = sse_all(&[cr.as_bytes()]).unwrap();
        assert!(
            !out.contains("deny_rm") && out.ends_with("}\r\r"),
            "{out:?}"
        );
        // an event left without its blank line at the end is judged all the same
        let out = sse_all(&[format!("data: {LIST}").as_bytes()]).unwrap();
        assert!(!out.contains("deny_rm"), "{out:?}");
        // a BOM opening the stream belongs to the SSE grammar
        let out = sse_all(&[BOM, b"data: {}\n\n"]).unwrap();
        assert_eq!(out.as_bytes(), [BOM, b"data: {}\n\n"].concat());
        let out = sse_all(&[BOM, format!("data: {LIST}\n\n").as_bytes()]).unwrap();
        assert!(
            out.starts_with("data: {") && !out.contains("deny_rm"),
            "{out:?}"
        );
    }

    #[test]
    fn a_comment_between_events_is_forwarded_at_once() {
        let mut f = SseFilter::new();
        let mut out = Vec::new();
        f.push(b"data: {\"a\":1}\n", &keep, &mut out).unwrap();
        assert!(out.is_empty(), "an event is held until its blank line");
        f.push(b"\n: ping\r", &keep, &mut out).unwrap();
        assert_eq!(out, b"data: {\"a\":1}\n\n: ping\r");
        f.push(b"\n", &keep, &mut out).unwrap();
        assert_eq!(out, b"data: {\"a\":1}\n\n: ping\r\n");
    }

    #[test]
    fn sse_that_cannot_be_read_is_refused() {
        assert_eq!(
            sse_all(&[LIST.as_bytes(), b"\n\n"]),
            Err(Unreadable::NotSse)
        );
        assert_eq!(sse_all(&[b"Data: x\n\n"]), Err(Unreadable::NotSse));
        assert_eq!(sse_all(&[b"data: {not json\n\n"]), Err(Unreadable::NotJson));
        assert_eq!(
            sse_all(&[b"event: message\ndata: \xEF\xBB\xBF{}\n\n"]),
            Err(Unreadable::Bom)
        );
        // an event of another type is not a message: its data may be anything
        assert_eq!(
            sse_all(&[b"event: endpoint\ndata: /messages?s=1\n\n"]).unwrap(),
            "event: endpoint\ndata: /messages?s=1\n\n"
        );
        // but a list in it is still filtered
        let out = sse_all(&[format!("event: other\ndata: {LIST}\n\n").as_bytes()]).unwrap();
        assert!(!out.contains("deny_rm"));
        // and data that looks like JSON but cannot be read is refused whatever the type
        // (fuzz finding list_filter: invalid UTF-8 in a tool name of an event `msseage`,
        // which a client decoding with replacement reads as a list)
        let lone = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"deny_x","description":"\ud800"}]}}"#;
        let bad_utf8 = [&br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"\xD4ead"},{"name":"deny_x"}]}}"#[..]].concat();
        let twice = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"deny_x"}],"Tools":[]}}"#;
        for kind in ["msseage", "endpoint", "Message", ""] {
            for (data, why) in [
                (lone.as_bytes(), Unreadable::NotJson),
                (&bad_utf8[..], Unreadable::NotJson),
                (twice.as_bytes(), Unreadable::Ambiguous),
                (b" \xEF\xBB\xBF[1,", Unreadable::NotJson),
                (b"{\"a\":1}{\"b\":2}", Unreadable::NotJson),
            ] {
                let ev = [format!("event: {kind}\ndata: ").as_bytes(), data, b"\n\n"].concat();
                assert_eq!(
                    sse_all(&[&ev]),
                    Err(why),
                    "{}",
                    String::from_utf8_lossy(&ev)
                );
            }
        }
        // an empty `event` field leaves the type `message`: its data must be JSON
        for ev in [
            &b"event:\ndata: /messages?s=1\n\n"[..],
            b"event: \ndata: x\n\n",
        ] {
            assert_eq!(sse_all(&[ev]), Err(Unreadable::NotJson));
        }
        // an event over the bound, in one line or in many, whatever the pieces
        let mut f = SseFilter::new();
        let mut out = Vec::new();
        let piece = vec![b'x'; 1024 * 1024];
        f.push(b"data: ", &keep, &mut out).unwrap();
        let mut r = Ok(());
        for _ in 0..9 {
            r = r.and_then(|()| f.push(&piece, &keep, &mut out));
        }
        assert_eq!(r, Err(Unreadable::EventTooLarge));
        let line = [b"data: ".as_slice(), &piece, b"\n"].concat();
        let mut f = SseFilter::new();
        let mut r = Ok(());
        for _ in 0..9 {
            r = r.and_then(|()| f.push(&line, &keep, &mut out));
        }
        assert_eq!(r, Err(Unreadable::EventTooLarge));
        // after a refusal nothing more comes out
        f.push(b"data: {}\n\n", &keep, &mut out).unwrap();
        assert!(out.is_empty());
    }

    fn head(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut h = crate::respond::response_header(status);
        for (n, v) in headers {
            h.append_header(n.to_string(), *v).unwrap();
        }
        h
    }

    fn run(judge: &mut Judge, pieces: &[&[u8]]) -> (Vec<u8>, Vec<Unreadable>, Vec<Flow>) {
        let (mut out, mut why, mut flows) = (Vec::new(), Vec::new(), Vec::new());
        for (i, p) in pieces.iter().enumerate() {
            let mut b = Some(Bytes::copy_from_slice(p));
            let (flow, w) = judge.body(&mut b, i + 1 == pieces.len(), &keep);
            out.extend_from_slice(b.as_deref().unwrap_or_default());
            why.extend(w);
            flows.push(flow);
        }
        (out, why, flows)
    }

    #[test]
    fn heads_that_cannot_be_read_become_the_502_error() {
        for (headers, why) in [
            (vec![("content-encoding", "gzip")], Unreadable::Encoded),
            (
                vec![("content-encoding", "identity"), ("content-encoding", "br")],
                Unreadable::Encoded,
            ),
            (
                vec![
                    ("content-type", "application/json"),
                    ("content-length", "8388609"),
                ],
                Unreadable::TooLarge,
            ),
        ] {
            let mut h = head(200, &headers);
            let (mut j, w) = Judge::start(&mut h, false, Some("3".into()));
            assert_eq!(w, Some(why));
            assert_eq!(h.status, 502);
            let (out, _, _) = run(&mut j, &[b"\x1f\x8b...", b"more"]);
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["id"], 3);
            assert_eq!(v["error"]["code"], -32603);
            assert_eq!(
                h.headers["content-length"].to_str().unwrap(),
                out.len().to_string()
            );
        }
        // nothing to read: a HEAD answer, 204, 304, an empty body
        for (status, headers, head_request) in [
            (200, vec![("content-encoding", "gzip")], true),
            (204, vec![("content-encoding", "gzip")], false),
            (304, vec![], false),
            (
                200,
                vec![("content-length", "0"), ("content-encoding", "gzip")],
                false,
            ),
        ] {
            let mut h = head(status, &headers);
            let (mut j, w) = Judge::start(&mut h, head_request, None);
            assert_eq!((w, h.status.as_u16()), (None, status));
            assert_eq!(run(&mut j, &[b"x"]).0, b"x");
        }
    }

    #[test]
    fn any_status_and_content_type_is_judged() {
        for (status, ct) in [
            (200, "application/json"),
            (201, "text/plain"),
            (202, "application/octet-stream"),
            (400, "application/json"),
        ] {
            let mut h = head(status, &[("content-type", ct), ("content-length", "999")]);
            let (mut j, w) = Judge::start(&mut h, false, None);
            assert_eq!(w, None);
            assert!(h.headers.get("content-length").is_none());
            let (a, b) = LIST.as_bytes().split_at(30);
            let (out, why, _) = run(&mut j, &[a, b]);
            assert!(why.is_empty());
            assert_eq!(
                names(&serde_json::from_slice(&out).unwrap()),
                ["read"],
                "{status} {ct}"
            );
        }
        // not JSON: refused on 2xx (status already sent: the body is the error), passed otherwise
        let mut h = head(200, &[("content-type", "text/plain")]);
        let (mut j, _) = Judge::start(&mut h, false, Some("\"a\"".into()));
        let (out, why, _) = run(&mut j, &[b"not", b" json"]);
        assert_eq!(why, [Unreadable::NotJson]);
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap()["id"], "a");
        let mut h = head(404, &[("content-type", "text/plain")]);
        let (mut j, _) = Judge::start(&mut h, false, None);
        assert_eq!(run(&mut j, &[b"Session not found"]).0, b"Session not found");
        // a non-2xx body that looks like JSON but is not the JSON the gateway reads is
        // refused: a client may read a list from it (fuzz finding list_filter)
        let lone = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"deny_x","description":"\ud800"}]}}"#;
        let bad_utf8 = [
            &br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"deny_x","d":""#[..],
            b"\xD4e\"}]}}",
        ]
        .concat();
        for doc in [
            lone.as_bytes(),
            &bad_utf8,
            b"  [{\"x\":1} trailing",
            b"\xEF\xBB\xBF",
        ] {
            let mut h = head(404, &[("content-type", "text/html")]);
            let (mut j, _) = Judge::start(&mut h, false, None);
            let (out, why, _) = run(&mut j, &[doc]);
            assert_eq!(why.len(), 1, "{}", String::from_utf8_lossy(doc));
            assert!(!String::from_utf8_lossy(&out).contains("deny_x"));
        }
        // a BOM is refused whatever the status
        let mut h = head(404, &[]);
        let (mut j, _) = Judge::start(&mut h, false, None);
        let (_, why, _) = run(&mut j, &[BOM, b"{}"]);
        assert_eq!(why, [Unreadable::Bom]);
    }

    #[test]
    fn a_json_answer_over_the_limit_is_refused_not_truncated() {
        let mut h = head(200, &[("content-type", "application/json")]);
        let (mut j, _) = Judge::start(&mut h, false, Some("9".into()));
        let piece = vec![b' '; 1024 * 1024];
        let pieces: Vec<&[u8]> = std::iter::repeat_n(piece.as_slice(), 10).collect();
        let (out, why, flows) = run(&mut j, &pieces);
        assert_eq!(why, [Unreadable::TooLarge]);
        assert!(flows.iter().all(|f| *f == Flow::Continue));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (v["id"].clone(), v["error"]["code"].clone()),
            (Value::from(9), Value::from(-32603))
        );
    }

    #[test]
    fn a_stream_that_cannot_be_read_ends_with_an_error_event() {
        let mut h = head(200, &[("content-type", "Text/Event-Stream; charset=utf-8")]);
        let (mut j, _) = Judge::start(&mut h, false, None);
        let ok = b"data: {\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n\n".as_slice();
        let (out, why, flows) = run(&mut j, &[ok, b"data: {oops\n\n", ok]);
        assert_eq!(why, [Unreadable::NotJson]);
        assert_eq!(flows, [Flow::Continue, Flow::End, Flow::Continue]);
        let text = String::from_utf8(out).unwrap();
        let events: Vec<&str> = text.split_terminator("\n\n").collect();
        assert_eq!(events.len(), 2, "{text:?}");
        assert_eq!(
            events[0],
            ok.strip_suffix(b"\n\n")
                .map(|s| std::str::from_utf8(s).unwrap())
                .unwrap()
        );
        let data = events[1].strip_prefix("event: message\ndata: ").unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["error"]["code"], -32603);
    }

    /// A stream of events with one terminator style, some of them tool lists.
    fn stream_strategy() -> impl Strategy<Value = (Vec<u8>, Vec<String>)> {
        let tool = (any::<bool>(), 0u32..1000).prop_map(|(deny, n)| {
            if deny {
                format!("deny_{n}")
            } else {
                format!("ok_{n}")
            }
        });
        let event = prop_oneof![
            proptest::collection::vec(tool, 0..6).prop_map(Some),
            Just(None),
        ];
        (
            proptest::collection::vec(event, 1..6),
            prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
            any::<bool>(),
        )
            .prop_map(|(events, t, batch)| {
                let mut out = String::new();
                let mut allowed = Vec::new();
                for (i, e) in events.into_iter().enumerate() {
                    out.push_str(&format!(": comment {i}{t}"));
                    match e {
                        Some(tools) => {
                            let list: Vec<Value> =
                                tools.iter().map(|n| serde_json::json!({"name": n})).collect();
                            let msg = serde_json::json!({"jsonrpc":"2.0","id":i,"result":{"tools":list}});
                            let msg = if batch { serde_json::json!([msg]) } else { msg };
                            let text = serde_json::to_string_pretty(&msg).unwrap();
                            out.push_str(&format!("event: message{t}id: {i}{t}"));
                            for line in text.lines() {
                                out.push_str(&format!("data: {line}{t}"));
                            }
                            allowed.extend(tools.into_iter().filter(|n| keep(n)));
                        }
                        None => out.push_str(&format!(
                            "data: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"deny\":{i}}}}}{t}"
                        )),
                    }
                    out.push_str(t);
                }
                (out.into_bytes(), allowed)
            })
    }

    proptest! {
        /// Whatever the pieces the stream arrives in, no denied tool is ever listed, every
        /// allowed one is, and the output is the same as for the stream in one piece.
        #[test]
        fn no_chunking_lets_a_denied_tool_through(
            (stream, allowed) in stream_strategy(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            at.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in at {
                pieces.push(&stream[last..c]);
                last = c;
            }
            pieces.push(&stream[last..]);
            let out = sse_all(&pieces).unwrap();
            let whole = sse_all(&[&stream]).unwrap();
            prop_assert_eq!(&out, &whole);
            prop_assert!(!out.contains("\"deny_"), "{}", out);
            for n in &allowed {
                let quoted = format!("\"{}\"", n);
                prop_assert!(out.contains(&quoted), "{} missing from {}", n, out);
            }
            let comments = String::from_utf8_lossy(&stream).matches(": comment ").count();
            prop_assert_eq!(out.matches(": comment ").count(), comments);
        }
    }
}
