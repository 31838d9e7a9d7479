//! The WatchRevocations response body: the watch's items as gRPC frames, each live event
//! encoded once per worker thread and shared by every stream that sends it.
//!
//! tonic's own response body encodes every message of every stream into that stream's buffer:
//! one revocation to 10,000 watchers was converted (six strings cloned), protobuf-encoded and
//! copied 10,000 times, into 10,000 buffers of 8 KiB that each cost cache misses. The frame of
//! one event is the same bytes for every watcher, so [`WatchBody`] hands hyper a reference to
//! one shared frame instead.
//!
//! tonic still does everything else: it decodes the request, runs the service method, and
//! builds the response head. The method leaves the [`WatchBody`] in the response's extensions
//! ([`BodySlot`]) and [`WithWatchBody`], around the generated server, puts it in place of
//! tonic's body. The end of the stream is the same as with tonic's body: trailers with
//! `grpc-status` 0, or with the error's status (code, message, `ErrorInfo` details).

use std::{
    cell::RefCell,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame};
use prost::Message as _;
use tokio_stream::Stream;
use tonic::{server::NamedService, Status};

use super::status::to_status;
use crate::{
    core::{revocation::RevocationEvent, RevocationKind, WatchItem, WatchStream},
    proto::{self, watch_revocations_response::Message},
};

/// Bytes of frames gathered into one data chunk when several items are ready at once (a
/// catch-up): as tonic's body does, so a catch-up is not one HTTP/2 frame per event.
const GATHER_BYTES: usize = 32 * 1024;
/// The gRPC message prefix: compression flag and length.
const PREFIX: usize = 5;

/// The body of one WatchRevocations response.
pub struct WatchBody {
    items: WatchStream,
    request_id: String,
    /// Trailers to send after the data already returned; then the body has ended.
    trailers: Option<HeaderMap>,
    ended: bool,
}

impl WatchBody {
    /// The body of the watch `items`; errors carry `request_id`.
    pub(crate) fn new(items: WatchStream, request_id: String) -> Self {
        Self {
            items,
            request_id,
            trailers: None,
            ended: false,
        }
    }

    /// The trailers that end the stream with `status`.
    fn end(&mut self, status: &Status) -> HeaderMap {
        let mut trailers = HeaderMap::new();
        if let Err(e) = status.add_header(&mut trailers) {
            // Only a message that cannot be a header value gets here; the code still can.
            tracing::warn!(error = %e, "watch end status without its message");
            trailers = HeaderMap::new();
            let _ = Status::new(status.code(), "").add_header(&mut trailers);
        }
        self.ended = true;
        trailers
    }

    /// The next item as a frame; `Err` with the trailers once the stream ends.
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, HeaderMap>> {
        let status = match std::task::ready!(Pin::new(&mut self.items).poll_next(cx)) {
            Some(Ok(item)) => match frame(item) {
                Ok(frame) => return Poll::Ready(Ok(frame)),
                Err(status) => status,
            },
            Some(Err(e)) => to_status(&e, &self.request_id),
            None => Status::ok(""),
        };
        Poll::Ready(Err(self.end(&status)))
    }
}

impl Body for WatchBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let first = match std::task::ready!(this.poll_item(cx)) {
            Ok(frame) => frame,
            Err(trailers) => return Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
        };
        // A live event comes alone, and goes out as the shared frame itself. Items that are
        // ready together go out as one chunk.
        let mut chunk: Option<BytesMut> = None;
        while chunk.as_ref().map_or(first.len(), BytesMut::len) < GATHER_BYTES {
            match this.poll_item(cx) {
                Poll::Ready(Ok(frame)) => chunk
                    .get_or_insert_with(|| BytesMut::from(&first[..]))
                    .extend_from_slice(&frame),
                Poll::Ready(Err(trailers)) => {
                    this.trailers = Some(trailers);
                    break;
                }
                Poll::Pending => break,
            }
        }
        let data = chunk.map_or(first, BytesMut::freeze);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.trailers.is_none()
    }
}

thread_local! {
    /// The last event this thread framed, and its frame. Keyed by the event's allocation,
    /// which the entry keeps alive: every stream of a live event holds the same `Arc`, so all
    /// the streams a worker thread serves share one encoding (an event read back from storage
    /// during a catch-up is a fresh allocation, framed on its own).
    static LAST_EVENT: RefCell<Option<(Arc<RevocationEvent>, Bytes)>> = const { RefCell::new(None) };
}

/// The gRPC frame (prefix and protobuf message) of `item`.
fn frame(item: WatchItem) -> Result<Bytes, Status> {
    let message = match item {
        WatchItem::Event(event) => return event_frame(&event),
        WatchItem::Progress(revision) => Message::Progress(proto::Progress { revision }),
        WatchItem::SnapshotEnd(revision) => Message::SnapshotEnd(proto::Progress { revision }),
    };
    encode(&proto::WatchRevocationsResponse {
        message: Some(message),
    })
}

/// The wire form of an event: the API writes "every instance" as an empty instance id and
/// "never expires" as 0.
fn event(e: &RevocationEvent) -> proto::RevocationEvent {
    proto::RevocationEvent {
        revision: e.revision,
        kind: kind(e.kind).into(),
        instance_id: e.instance_id.clone().unwrap_or_default(),
        token_fingerprint: e.token_fingerprint.clone(),
        client_id: e.client_id.clone(),
        key_id: e.key_id.clone(),
        reason: e.reason.clone(),
        expire_time: e.expire_ms.unwrap_or(0),
        revoke_time: e.revoke_ms,
        token_handle: e.token_handle.clone(),
    }
}

fn kind(k: RevocationKind) -> proto::RevocationKind {
    match k {
        RevocationKind::TokenRevoked => proto::RevocationKind::TokenRevoked,
        RevocationKind::DeviceCredentialRefreshed => {
            proto::RevocationKind::DeviceCredentialRefreshed
        }
        RevocationKind::DeviceCredentialUnregistered => {
            proto::RevocationKind::DeviceCredentialUnregistered
        }
        RevocationKind::AccessKeyDeleted => proto::RevocationKind::AccessKeyDeleted,
        RevocationKind::TokensOfKeyRevoked => proto::RevocationKind::TokensOfKeyRevoked,
        RevocationKind::InstanceTokensRevoked => proto::RevocationKind::InstanceTokensRevoked,
    }
}

fn event_frame(event: &Arc<RevocationEvent>) -> Result<Bytes, Status> {
    LAST_EVENT.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((cached, frame)) = last.as_ref() {
            if Arc::ptr_eq(cached, event) {
                return Ok(frame.clone());
            }
        }
        let frame = encode(&proto::WatchRevocationsResponse {
            message: Some(Message::Event(self::event(event))),
        })?;
        *last = Some((event.clone(), frame.clone()));
        Ok(frame)
    })
}

fn encode(message: &proto::WatchRevocationsResponse) -> Result<Bytes, Status> {
    let len = message.encoded_len();
    let prefix = u32::try_from(len)
        .map_err(|_| Status::resource_exhausted("revocation event too large to send"))?;
    let mut buf = BytesMut::with_capacity(PREFIX + len);
    buf.put_u8(0); // not compressed
    buf.put_u32(prefix);
    message.encode_raw(&mut buf);
    Ok(buf.freeze())
}

/// Carries a [`WatchBody`] from the service method, through tonic's response mapping (which
/// moves the response's extensions into the HTTP response), to [`WithWatchBody`].
#[derive(Clone)]
pub(crate) struct BodySlot(Arc<Mutex<Option<WatchBody>>>);

impl BodySlot {
    pub(crate) fn new(body: WatchBody) -> Self {
        Self(Arc::new(Mutex::new(Some(body))))
    }

    fn take(&self) -> Option<WatchBody> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The generated RevocationService server with the watch's own body in place of tonic's (see
/// the module doc). Without this wrapper a watch ends at once with `INTERNAL`.
#[derive(Clone)]
pub struct WithWatchBody<S>(pub S);

impl<S: NamedService> NamedService for WithWatchBody<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for WithWatchBody<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = self.0.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            if let Some(body) = response
                .extensions_mut()
                .remove::<BodySlot>()
                .and_then(|slot| slot.take())
            {
                *response.body_mut() = tonic::body::Body::new(body);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::RevocationKind;

    fn event(revision: u64) -> Arc<RevocationEvent> {
        Arc::new(RevocationEvent {
            revision,
            kind: RevocationKind::TokenRevoked,
            instance_id: Some("post-cn-a".into()),
            token_fingerprint: "fp".into(),
            client_id: String::new(),
            key_id: String::new(),
            reason: "RevokeToken".into(),
            expire_ms: Some(1),
            revoke_ms: 2,
            token_handle: "h".into(),
        })
    }

    /// The message of a frame, checking its prefix.
    fn decode(frame: &[u8]) -> proto::WatchRevocationsResponse {
        assert_eq!(frame[0], 0, "not compressed");
        let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
        assert_eq!(frame.len(), PREFIX + len);
        proto::WatchRevocationsResponse::decode(&frame[PREFIX..]).expect("a message")
    }

    #[test]
    fn frames_carry_the_wire_form_and_one_event_is_encoded_once_per_thread() {
        let e = event(7);
        let first = frame(WatchItem::Event(e.clone())).unwrap();
        let again = frame(WatchItem::Event(e.clone())).unwrap();
        assert_eq!(first.as_ptr(), again.as_ptr(), "the same shared frame");
        match decode(&first).message {
            Some(Message::Event(wire)) => assert_eq!(wire, super::event(&e)),
            other => panic!("{other:?}"),
        }
        // The same revision in another allocation (read back from storage) is framed anew,
        // to the same bytes.
        let stored = frame(WatchItem::Event(event(7))).unwrap();
        assert_ne!(stored.as_ptr(), first.as_ptr());
        assert_eq!(stored, first);
        assert_eq!(
            decode(&frame(WatchItem::Progress(9)).unwrap()).message,
            Some(Message::Progress(proto::Progress { revision: 9 }))
        );
        assert_eq!(
            decode(&frame(WatchItem::SnapshotEnd(3)).unwrap()).message,
            Some(Message::SnapshotEnd(proto::Progress { revision: 3 }))
        );
    }
}
