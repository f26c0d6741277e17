//! Connections whose HTTP/2 `:authority` is made acceptable before tonic sees it.
//!
//! gRPC clients that dial a unix socket without naming an authority send one of their own
//! making: the kubelet's plugin watcher (grpc-go, passthrough target) sends the socket
//! path, grpc-core (Python's `grpcio`) a percent-encoded `unix:` URI. Neither is a valid
//! URI authority, and the `h2` server behind tonic answers such a request with
//! `RST_STREAM(PROTOCOL_ERROR)` before any service runs. (The kubelet's own CSI client
//! sets `localhost`; the plugin watcher dials the registration socket.)
//!
//! [`LocalAuthority`] wraps each accepted stream and rewrites, on the way in, every header
//! block whose `:authority` does not parse as a URI authority: the block is decoded with
//! the client's HPACK context, the authority replaced by `localhost`, and the block
//! re-encoded with literals only (no dynamic table), so h2's decoder needs no shared state
//! with ours. Every other frame, and the whole server-to-client direction, passes through
//! unchanged. A connection that does not start with the HTTP/2 preface is passed through
//! untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// The connection preface every HTTP/2 client sends first (RFC 9113, 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame header length.
const FRAME_HEADER: usize = 9;
/// Largest frame payload we emit: the protocol's default SETTINGS_MAX_FRAME_SIZE, which
/// every server accepts.
const MAX_EMITTED_PAYLOAD: usize = 16_384;
/// Largest frame we buffer: the largest payload a peer may ever send (2^24 - 1).
const MAX_FRAME: usize = FRAME_HEADER + (1 << 24) - 1;

const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// The authority put in place of one that is not a URI authority.
pub const REPLACEMENT_AUTHORITY: &str = "localhost";

/// A stream whose incoming HTTP/2 header blocks carry a valid `:authority`.
pub struct LocalAuthority<S> {
    inner: S,
    rewriter: Rewriter,
}

impl<S> LocalAuthority<S> {
    /// Wraps an accepted connection.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            rewriter: Rewriter::default(),
        }
    }
}

impl<S: Connected> Connected for LocalAuthority<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LocalAuthority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.rewriter.copy_out(buf) {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // End of stream: whatever is left (an incomplete frame) goes out as it is,
                // so the server reports the truncation itself.
                this.rewriter.finish();
                this.rewriter.copy_out(buf);
                return Poll::Ready(Ok(()));
            }
            this.rewriter.feed(read.filled())?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LocalAuthority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Where the client-to-server byte stream is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the connection preface.
    #[default]
    Preface,
    /// Reading frames.
    Frames,
    /// Not HTTP/2 with prior knowledge: bytes pass through untouched.
    Opaque,
}

/// A header block whose HEADERS frame did not carry END_HEADERS yet.
#[derive(Debug)]
struct OpenBlock {
    stream: u32,
    end_stream: bool,
    fragments: Vec<u8>,
}

/// The byte-stream state machine, free of I/O so that it can be tested with bytes.
struct Rewriter {
    phase: Phase,
    input: Vec<u8>,
    output: Vec<u8>,
    sent: usize,
    decoder: loona_hpack::Decoder<'static>,
    open: Option<OpenBlock>,
}

impl Default for Rewriter {
    fn default() -> Self {
        Self {
            phase: Phase::default(),
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            decoder: loona_hpack::Decoder::new(),
            open: None,
        }
    }
}

impl Rewriter {
    /// Moves processed bytes into `buf`; false when there are none.
    fn copy_out(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let pending = &self.output[self.sent..];
        if pending.is_empty() || buf.remaining() == 0 {
            return false;
        }
        let n = pending.len().min(buf.remaining());
        buf.put_slice(&pending[..n]);
        self.sent += n;
        if self.sent == self.output.len() {
            self.output.clear();
            self.sent = 0;
        }
        true
    }

    /// Passes on whatever is left at the end of the stream.
    fn finish(&mut self) {
        self.output.append(&mut self.input);
    }

    /// Takes bytes read from the client and processes every complete unit.
    fn feed(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.phase == Phase::Opaque {
            self.output.extend_from_slice(bytes);
            return Ok(());
        }
        self.input.extend_from_slice(bytes);
        if self.phase == Phase::Preface {
            let n = self.input.len().min(PREFACE.len());
            if self.input[..n] != PREFACE[..n] {
                self.phase = Phase::Opaque;
                self.output.append(&mut self.input);
                return Ok(());
            }
            if n < PREFACE.len() {
                return Ok(());
            }
            self.output.extend(self.input.drain(..PREFACE.len()));
            self.phase = Phase::Frames;
        }
        let mut used = 0;
        while let Some(frame) = complete_frame(&self.input[used..])? {
            let length = frame.len();
            self.frame(frame.to_vec())?;
            used += length;
        }
        self.input.drain(..used);
        Ok(())
    }

    /// Handles one complete frame (header and payload).
    fn frame(&mut self, frame: Vec<u8>) -> io::Result<()> {
        let kind = frame[3];
        let flags = frame[4];
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        match (kind, &mut self.open) {
            (TYPE_HEADERS, None) => {
                let fragment = headers_fragment(payload, flags)?;
                let block = OpenBlock {
                    stream,
                    end_stream: flags & FLAG_END_STREAM != 0,
                    fragments: fragment.to_vec(),
                };
                if flags & FLAG_END_HEADERS != 0 {
                    self.emit(block)?;
                } else {
                    self.open = Some(block);
                }
            }
            (TYPE_CONTINUATION, Some(open)) if open.stream == stream => {
                open.fragments.extend_from_slice(payload);
                if flags & FLAG_END_HEADERS != 0
                    && let Some(block) = self.open.take()
                {
                    self.emit(block)?;
                }
            }
            (_, Some(_)) => {
                // A frame inside a header block is a connection error (RFC 9113, 6.10):
                // let the server see it as it came and say so.
                self.output.extend_from_slice(&frame);
            }
            (_, None) => self.output.extend_from_slice(&frame),
        }
        Ok(())
    }

    /// Decodes a complete header block, fixes its authority and writes it out as HEADERS
    /// (and CONTINUATION) frames of literal fields.
    fn emit(&mut self, block: OpenBlock) -> io::Result<()> {
        let fields = self
            .decoder
            .decode(&block.fragments)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("HPACK: {e:?}")))?;
        let mut encoded = Vec::with_capacity(block.fragments.len() + 16);
        for (name, value) in &fields {
            let value: &[u8] = if name == b":authority" && !is_authority(value) {
                REPLACEMENT_AUTHORITY.as_bytes()
            } else {
                value
            };
            encode_literal(&mut encoded, name, value);
        }
        let pieces: Vec<&[u8]> = if encoded.is_empty() {
            vec![&[]]
        } else {
            encoded.chunks(MAX_EMITTED_PAYLOAD).collect()
        };
        let last = pieces.len() - 1;
        for (i, piece) in pieces.into_iter().enumerate() {
            let kind = if i == 0 {
                TYPE_HEADERS
            } else {
                TYPE_CONTINUATION
            };
            let mut flags = if i == 0 && block.end_stream {
                FLAG_END_STREAM
            } else {
                0
            };
            if i == last {
                flags |= FLAG_END_HEADERS;
            }
            write_frame_header(&mut self.output, piece.len(), kind, flags, block.stream);
            self.output.extend_from_slice(piece);
        }
        Ok(())
    }
}

/// The first complete frame at the start of `input`, if all of it is there.
fn complete_frame(input: &[u8]) -> io::Result<Option<&[u8]>> {
    if input.len() < FRAME_HEADER {
        return Ok(None);
    }
    let length = usize::from(input[0]) << 16 | usize::from(input[1]) << 8 | usize::from(input[2]);
    let total = FRAME_HEADER + length;
    if total > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    Ok((input.len() >= total).then(|| &input[..total]))
}

/// The header block fragment of a HEADERS payload (without padding and priority).
fn headers_fragment(payload: &[u8], flags: u8) -> io::Result<&[u8]> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed HEADERS frame");
    let mut fragment = payload;
    let mut padding = 0;
    if flags & FLAG_PADDED != 0 {
        let (&pad, rest) = fragment.split_first().ok_or_else(malformed)?;
        padding = usize::from(pad);
        fragment = rest;
    }
    if flags & FLAG_PRIORITY != 0 {
        fragment = fragment.get(5..).ok_or_else(malformed)?;
    }
    let end = fragment.len().checked_sub(padding).ok_or_else(malformed)?;
    Ok(&fragment[..end])
}

fn write_frame_header(out: &mut Vec<u8>, length: usize, kind: u8, flags: u8, stream: u32) {
    // `length` is at most MAX_EMITTED_PAYLOAD, so it fits the 24-bit field.
    out.extend_from_slice(&[
        (length >> 16) as u8,
        (length >> 8) as u8,
        length as u8,
        kind,
        flags,
    ]);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// Whether `value` is a URI authority that h2 accepts.
fn is_authority(value: &[u8]) -> bool {
    !value.is_empty() && http::uri::Authority::try_from(value).is_ok()
}

/// An HPACK "literal header field without indexing, new name" (RFC 7541, 6.2.2), with
/// both strings as plain octets.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    encode_string(out, name);
    encode_string(out, value);
}

fn encode_string(out: &mut Vec<u8>, bytes: &[u8]) {
    encode_integer(out, bytes.len(), 7, 0x00);
    out.extend_from_slice(bytes);
}

/// An HPACK integer with an `prefix`-bit prefix whose other bits are `high` (RFC 7541, 5.1).
pub(crate) fn encode_integer(out: &mut Vec<u8>, value: usize, prefix: u8, high: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A HEADERS frame carrying `fields` as literals, the way a client might send them.
    fn headers_frame(stream: u32, flags: u8, fields: &[(&str, &str)]) -> Vec<u8> {
        let mut block = Vec::new();
        for (name, value) in fields {
            encode_literal(&mut block, name.as_bytes(), value.as_bytes());
        }
        let mut frame = Vec::new();
        write_frame_header(&mut frame, block.len(), TYPE_HEADERS, flags, stream);
        frame.extend_from_slice(&block);
        frame
    }

    fn run(rewriter: &mut Rewriter, bytes: &[u8]) -> Vec<u8> {
        rewriter.feed(bytes).unwrap();
        std::mem::take(&mut rewriter.output)
    }

    fn decoded_headers(bytes: &[u8]) -> Vec<(String, String)> {
        let mut decoder = loona_hpack::Decoder::new();
        let frame = complete_frame(bytes).unwrap().unwrap();
        assert_eq!(frame[3], TYPE_HEADERS);
        decoder
            .decode(&frame[FRAME_HEADER..])
            .unwrap()
            .into_iter()
            .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn a_socket_path_authority_becomes_localhost() {
        let mut rewriter = Rewriter::default();
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(
            1,
            FLAG_END_HEADERS,
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/pluginregistration.Registration/GetInfo"),
                (":authority", "/var/lib/kubelet/plugins_registry/x-reg.sock"),
                ("content-type", "application/grpc"),
            ],
        ));
        let out = run(&mut rewriter, &input);
        assert_eq!(&out[..PREFACE.len()], PREFACE);
        let headers = decoded_headers(&out[PREFACE.len()..]);
        assert!(headers.contains(&(":authority".into(), "localhost".into())));
        assert!(headers.contains(&(
            ":path".into(),
            "/pluginregistration.Registration/GetInfo".into()
        )));
        assert_eq!(headers.len(), 5);
    }

    #[test]
    fn valid_authorities_and_other_frames_are_kept() {
        let mut rewriter = Rewriter::default();
        let mut input = PREFACE.to_vec();
        // SETTINGS, then a request with a good authority, then DATA.
        input.extend([0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
        input.extend(headers_frame(
            1,
            FLAG_END_HEADERS,
            &[(":authority", "localhost:50051")],
        ));
        input.extend([0, 0, 2, 0x0, FLAG_END_STREAM, 0, 0, 0, 1, 0xab, 0xcd]);
        let out = run(&mut rewriter, &input);
        let settings = &out[PREFACE.len()..PREFACE.len() + 9];
        assert_eq!(settings, [0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
        let rest = &out[PREFACE.len() + 9..];
        let headers = decoded_headers(rest);
        assert_eq!(
            headers,
            [(":authority".to_owned(), "localhost:50051".to_owned())]
        );
        assert!(out.ends_with(&[0, 0, 2, 0x0, FLAG_END_STREAM, 0, 0, 0, 1, 0xab, 0xcd]));
    }

    #[test]
    fn frames_split_across_reads_and_continuations_are_joined() {
        let mut rewriter = Rewriter::default();
        let full = headers_frame(
            3,
            FLAG_END_STREAM,
            &[(":authority", "unix:%2Ftmp%2Fplugin.sock"), ("x", "y")],
        );
        // Split the block in two: HEADERS (no END_HEADERS) + CONTINUATION.
        let block = &full[FRAME_HEADER..];
        let (a, b) = block.split_at(block.len() / 2);
        let mut input = PREFACE.to_vec();
        write_frame_header(&mut input, a.len(), TYPE_HEADERS, FLAG_END_STREAM, 3);
        input.extend_from_slice(a);
        write_frame_header(&mut input, b.len(), TYPE_CONTINUATION, FLAG_END_HEADERS, 3);
        input.extend_from_slice(b);
        let mut out = Vec::new();
        for byte in &input {
            out.extend(run(&mut rewriter, std::slice::from_ref(byte)));
        }
        let frame = &out[PREFACE.len()..];
        assert_eq!(frame[4], FLAG_END_STREAM | FLAG_END_HEADERS);
        let headers = decoded_headers(frame);
        assert_eq!(headers[0], (":authority".into(), "localhost".into()));
        assert_eq!(headers[1], ("x".into(), "y".into()));
    }

    #[test]
    fn padding_and_priority_are_dropped_with_the_block_intact() {
        let plain = headers_frame(5, FLAG_END_HEADERS, &[(":authority", "/a/b.sock")]);
        let block = &plain[FRAME_HEADER..];
        let mut payload = vec![3u8]; // pad length
        payload.extend([0, 0, 0, 1, 16]); // priority: dependency 1, weight 16
        payload.extend_from_slice(block);
        payload.extend([0, 0, 0]);
        let mut input = PREFACE.to_vec();
        write_frame_header(
            &mut input,
            payload.len(),
            TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY,
            5,
        );
        input.extend(payload);
        let out = run(&mut Rewriter::default(), &input);
        let headers = decoded_headers(&out[PREFACE.len()..]);
        assert_eq!(headers, [(":authority".to_owned(), "localhost".to_owned())]);
    }

    #[test]
    fn the_clients_dynamic_table_is_honoured() {
        // A client that indexes its authority and then refers to it by index.
        let mut block = vec![0x41]; // literal with incremental indexing, name index 1
        encode_string(&mut block, b"/run/x.sock");
        let mut input = PREFACE.to_vec();
        write_frame_header(&mut input, block.len(), TYPE_HEADERS, FLAG_END_HEADERS, 1);
        input.extend(&block);
        let second = [0xbe]; // indexed field 62: the first dynamic entry
        write_frame_header(&mut input, 1, TYPE_HEADERS, FLAG_END_HEADERS, 3);
        input.extend(second);
        let out = run(&mut Rewriter::default(), &input);
        let first = complete_frame(&out[PREFACE.len()..]).unwrap().unwrap();
        let next = &out[PREFACE.len() + first.len()..];
        // Each emitted block stands alone: decode with fresh decoders.
        assert_eq!(
            decoded_headers(first),
            [(":authority".to_owned(), "localhost".to_owned())]
        );
        assert_eq!(
            decoded_headers(next),
            [(":authority".to_owned(), "localhost".to_owned())]
        );
    }

    #[test]
    fn other_protocols_pass_through() {
        let out = run(&mut Rewriter::default(), b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn integers_use_continuation_bytes() {
        let mut out = Vec::new();
        encode_integer(&mut out, 1337, 5, 0);
        assert_eq!(out, [31, 154, 10]); // RFC 7541, C.1.2
    }
}
