//! The ASGI side: the bridge between threads, the per-request exchange, and the Python objects
//! the app sees (`scope`, `receive`, `send`).

pub mod awaitable;
pub mod bridge;
pub mod cycle;
pub mod exchange;
pub mod lend;
pub mod link;
pub mod runner;
pub mod scope;
