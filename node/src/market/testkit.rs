//! A test driver: two markets wired back to back, delivering requests, answers and gossiped
//! offers between them, with requests or answers dropped on demand.

use super::{CmdResult, DocCommand, Input, Market, Output};
use crate::net::behaviour::TopicKind;
use std::collections::VecDeque;
use std::sync::Arc;
use wattmesh_protocol::envelope::Envelope;
use wattmesh_protocol::sample::{self, NOW_MS};
use wattmesh_protocol::trade::TradeRequest;
use wattmesh_protocol::{NodeId, Offer};

/// Two markets wired back to back: every request is delivered (unless dropped) and its
/// answer fed back, until nothing is left to deliver.
pub(crate) struct Pair {
    pub(crate) m: [Market; 2],
    pub(crate) now: u64,
    /// Drop the next this many requests (as if the network lost them).
    pub(crate) drop: usize,
    /// Drop the next this many answers (the request arrived; its answer was lost).
    pub(crate) drop_answers: usize,
    /// Lose every request this says yes to.
    pub(crate) lose: fn(&TradeRequest) -> bool,
}

impl Pair {
    pub(crate) fn new() -> Pair {
        let chain = sample::chain();
        Pair {
            m: [
                Market::new(Arc::new(sample::seller_key()), chain.clone()),
                Market::new(Arc::new(sample::buyer_key()), chain),
            ],
            now: NOW_MS,
            drop: 0,
            drop_answers: 0,
            lose: |_| false,
        }
    }

    pub(crate) fn id(&self, i: usize) -> NodeId {
        self.m[i].me()
    }

    /// Feeds `input` to market `i` and delivers everything that follows. Returns the
    /// commands' results.
    pub(crate) fn feed(&mut self, i: usize, input: Input) -> Vec<Result<CmdResult, String>> {
        let mut done = Vec::new();
        let mut queue: VecDeque<(usize, Output)> = self.m[i]
            .handle(self.now, true, input)
            .into_iter()
            .map(|o| (i, o))
            .collect();
        while let Some((at, o)) = queue.pop_front() {
            match o {
                Output::Send { to, token, req } => {
                    let other = usize::from(to == self.id(1));
                    assert_ne!(other, at, "a market sent itself a request");
                    let lost = (self.lose)(&req)
                        || self.drop > 0 && {
                            self.drop -= 1;
                            true
                        };
                    if lost {
                        queue.extend(
                            self.m[at]
                                .handle(self.now, true, Input::Response { token, resp: None })
                                .into_iter()
                                .map(|o| (at, o)),
                        );
                        continue;
                    }
                    let from = self.id(at);
                    let outs = self.m[other].handle(
                        self.now,
                        true,
                        Input::Request {
                            from,
                            req,
                            reply: token,
                        },
                    );
                    for o in outs {
                        match o {
                            Output::Reply { reply, resp } => {
                                let resp = if self.drop_answers > 0 {
                                    self.drop_answers -= 1;
                                    None
                                } else {
                                    Some(resp)
                                };
                                queue.extend(
                                    self.m[at]
                                        .handle(
                                            self.now,
                                            true,
                                            Input::Response { token: reply, resp },
                                        )
                                        .into_iter()
                                        .map(|o| (at, o)),
                                );
                            }
                            o => queue.push_back((other, o)),
                        }
                    }
                }
                Output::Done { result, .. } => done.push(result),
                Output::Publish(TopicKind::Offers, bytes) => {
                    let Some(offer) = Envelope::from_bytes(&bytes)
                        .ok()
                        .and_then(|e| e.payload_as::<Offer>().ok())
                    else {
                        continue;
                    };
                    for k in 0..2 {
                        queue.extend(
                            self.m[k]
                                .handle(self.now, true, Input::Offer(offer.clone(), bytes.clone()))
                                .into_iter()
                                .map(|o| (k, o)),
                        );
                    }
                }
                _ => {}
            }
        }
        done
    }

    pub(crate) fn cmd(&mut self, i: usize, command: DocCommand) -> Result<CmdResult, String> {
        self.feed(i, Input::Doc { cmd: 1, command })
            .pop()
            .expect("a command always reports")
    }

    pub(crate) fn tick(&mut self) {
        for i in 0..2 {
            self.feed(i, Input::Tick);
        }
    }
}
