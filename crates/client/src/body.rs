//! A request body that says it has ended as soon as its last frame is out, so a unary call's
//! message and its end of stream leave in one HTTP/2 DATA frame.
//!
//! Why: tonic's request body only learns it is done when polled once more after the message,
//! so hyper sends the message, then an empty DATA frame with END_STREAM. h2 queues a DATA
//! payload of 256 bytes or more by reference and writes it out before it queues anything
//! else on that connection, so after such a message the empty frame goes out in a write (a
//! syscall and a TCP segment) of its own, and the server's handler, which waits for the end
//! of the request, is woken a second time. An AuthorizeTopic with a session handle is that
//! size. Smaller messages only save the empty frame. Looking one frame ahead costs nothing when
//! the body is already complete, which a unary request's always is.

use std::{
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::{body::Body, Status};

/// Wraps a request body to poll one frame ahead (see the module's documentation).
pub(crate) struct EndsWithLastFrame {
    inner: Body,
    /// A frame (or the error) polled ahead of its turn.
    ahead: Option<Result<Frame<Bytes>, Status>>,
    /// The inner body answered that it has no more frames.
    ended: bool,
}

impl EndsWithLastFrame {
    /// `inner`, as a tonic body again.
    pub(crate) fn wrap(inner: Body) -> Body {
        if inner.is_end_stream() {
            return inner;
        }
        Body::new(Self {
            inner,
            ahead: None,
            ended: false,
        })
    }
}

impl HttpBody for EndsWithLastFrame {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let frame = match this.ahead.take() {
            Some(frame) => frame,
            None if this.ended => return Poll::Ready(None),
            None => match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(frame) => frame,
                None => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
            },
        };
        if frame.is_ok() {
            // Pending leaves the waker with the inner body; the caller polls again anyway
            // once it has sent this frame.
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(None) => this.ended = true,
                Poll::Ready(Some(next)) => this.ahead = Some(next),
                Poll::Pending => {}
            }
        }
        Poll::Ready(Some(frame))
    }

    fn is_end_stream(&self) -> bool {
        self.ahead.is_none() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.ahead {
            None => self.inner.size_hint(),
            // The frame ahead is part of what is left; its size is not worth tracking.
            Some(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        task::{Context, Poll, Waker},
    };

    use super::*;

    /// A body that yields the given frames, each after one `Pending`, when `slow`.
    struct Script {
        frames: VecDeque<Result<Frame<Bytes>, Status>>,
        slow: bool,
        waited: bool,
    }

    impl HttpBody for Script {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            if self.slow && !self.waited {
                self.waited = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.waited = false;
            Poll::Ready(self.frames.pop_front())
        }
    }

    fn data(s: &'static str) -> Result<Frame<Bytes>, Status> {
        Ok(Frame::data(Bytes::from_static(s.as_bytes())))
    }

    /// Drains `body`, recording for each frame whether the body then said it had ended.
    fn drain(frames: Vec<Result<Frame<Bytes>, Status>>, slow: bool) -> Vec<(String, bool)> {
        let mut body = EndsWithLastFrame::wrap(Body::new(Script {
            frames: frames.into(),
            slow,
            waited: false,
        }));
        let mut cx = Context::from_waker(Waker::noop());
        let mut seen = Vec::new();
        for _ in 0..100 {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Pending => continue,
                Poll::Ready(None) => return seen,
                Poll::Ready(Some(frame)) => {
                    let text = match frame {
                        Ok(f) if f.is_data() => match f.into_data() {
                            Ok(d) => String::from_utf8_lossy(&d).into_owned(),
                            Err(_) => "?".into(),
                        },
                        Ok(_) => "trailers".into(),
                        Err(status) => format!("error {}", status.message()),
                    };
                    seen.push((text, body.is_end_stream()));
                }
            }
        }
        panic!("the body never ended: {seen:?}");
    }

    #[test]
    fn a_single_message_ends_the_stream_with_it() {
        assert_eq!(drain(vec![data("m")], false), [("m".into(), true)]);
    }

    #[test]
    fn frames_keep_their_order_and_only_the_last_ends_the_stream() {
        let frames = || {
            vec![
                data("a"),
                data("b"),
                Ok(Frame::trailers(Default::default())),
            ]
        };
        let want = [
            ("a".to_owned(), false),
            ("b".to_owned(), false),
            ("trailers".to_owned(), true),
        ];
        assert_eq!(drain(frames(), false), want);
        // A body that is not ready between frames: nothing is lost or reordered, and the
        // end is only announced once the inner body has said so.
        let slow = drain(frames(), true);
        assert_eq!(
            slow.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
            ["a", "b", "trailers"]
        );
        assert!(slow.iter().take(2).all(|(_, end)| !end));
    }

    #[test]
    fn an_error_ahead_is_delivered_in_its_turn() {
        let seen = drain(vec![data("a"), Err(Status::internal("boom"))], false);
        assert_eq!(
            seen,
            [("a".into(), false), ("error boom".into(), false)],
            "{seen:?}"
        );
    }
}
