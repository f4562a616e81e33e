//! The loop thread's side: everything that touches Python objects. `context` starts each
//! request's app and handles what the I/O thread hands over (`crate::handoff`); `http` and
//! `websocket` are the two cycles behind `receive` and `send`, sharing `link` (waiting and
//! waking) and `message` (reading the app's messages); `scope` builds the scope, `runner` drives
//! the app's coroutine, `lend` lends large bodies to the I/O thread.

pub mod awaitable;
pub mod context;
pub mod http;
pub mod lend;
pub mod link;
pub mod message;
pub mod runner;
pub mod scope;
pub mod websocket;
