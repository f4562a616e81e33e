//! rsgi's Rust core: an HTTP/1.1 server on tokio and hyper, bridged to an asyncio event loop.
//! This file only wires the Python module together.

mod asgi;
mod config;
mod handoff;
mod http;
mod log;
mod metrics;
mod net;
mod server;
mod supervisor;
#[cfg(test)]
mod testing;
mod tls;
mod ws;

use pyo3::prelude::*;

// Buffers cross threads (made on the loop thread, freed on the I/O thread); mimalloc handles
// that pattern better than glibc's arenas. Only the Rust side's allocations go through it.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pymodule]
fn _rsgi(m: &Bound<'_, PyModule>) -> PyResult<()> {
    server::memory::tune();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<server::Core>()?;
    m.add_class::<supervisor::Supervisor>()?;
    supervisor::protocol::export(m)?;
    m.add_class::<asgi::http::HttpCycle>()?;
    m.add_class::<asgi::websocket::WebSocketCycle>()?;
    m.add_class::<asgi::awaitable::Ready>()?;
    m.add_class::<asgi::runner::AppRunner>()?;
    m.add(
        "ClientDisconnected",
        m.py().get_type::<asgi::message::ClientDisconnected>(),
    )?;
    Ok(())
}
