//! memberlist's TCP stream layer, except that every outgoing connection is made from the
//! node's own bind address (memberlist's own layer lets the kernel pick the source), so a fault
//! injected between two node addresses isolates exactly those two nodes.

use std::io;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};

use agnostic::Runtime;
use agnostic::net::{Net, TcpListener as _, TcpStream as _};
use futures::{AsyncReadExt, AsyncWriteExt};
use memberlist::net::stream_layer::{Listener, PromisedStream, StreamLayer};
use peekable::future::AsyncPeekable;

type RtStream<R> = <<R as Runtime>::Net as Net>::TcpStream;
type ReadHalf<R> = <RtStream<R> as agnostic::net::TcpStream>::OwnedReadHalf;
type WriteHalf<R> = <RtStream<R> as agnostic::net::TcpStream>::OwnedWriteHalf;

/// TCP whose outgoing connections leave from a fixed IP.
pub(crate) struct BoundTcp<R> {
    ip: IpAddr,
    _runtime: PhantomData<R>,
}

impl<R: Runtime> StreamLayer for BoundTcp<R> {
    type Runtime = R;
    type Listener = BoundListener<R>;
    type Stream = BoundStream<R>;
    /// The IP outgoing connections are bound to.
    type Options = IpAddr;

    async fn new(ip: IpAddr) -> io::Result<Self> {
        Ok(Self {
            ip,
            _runtime: PhantomData,
        })
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Stream> {
        let socket = match self.ip {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        if !self.ip.is_unspecified() {
            socket.bind(SocketAddr::new(self.ip, 0))?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        let local_addr = stream.local_addr()?;
        let stream = RtStream::<R>::try_from(stream.into_std()?)?;
        let (reader, writer) = stream.into_split();
        Ok(BoundStream {
            reader: AsyncPeekable::new(reader),
            writer,
            local_addr,
            peer_addr: addr,
        })
    }

    async fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        let ln = <<R::Net as Net>::TcpListener as agnostic::net::TcpListener>::bind(addr).await?;
        let local_addr = ln.local_addr()?;
        Ok(BoundListener { ln, local_addr })
    }

    fn is_secure() -> bool {
        false
    }
}

/// The listening side.
pub(crate) struct BoundListener<R: Runtime> {
    ln: <R::Net as Net>::TcpListener,
    local_addr: SocketAddr,
}

impl<R: Runtime> Listener for BoundListener<R> {
    type Stream = BoundStream<R>;

    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (conn, addr) = self.ln.accept().await?;
        let (reader, writer) = conn.into_split();
        Ok((
            BoundStream {
                reader: AsyncPeekable::new(reader),
                writer,
                local_addr: self.local_addr,
                peer_addr: addr,
            },
            addr,
        ))
    }

    async fn shutdown(&self) -> io::Result<()> {
        Ok(())
    }

    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// One connection.
pub(crate) struct BoundStream<R: Runtime> {
    reader: AsyncPeekable<ReadHalf<R>>,
    writer: WriteHalf<R>,
    local_addr: SocketAddr,
    peer_addr: SocketAddr,
}

impl<R: Runtime> memberlist::transport::Connection for BoundStream<R> {
    type Reader = AsyncPeekable<ReadHalf<R>>;
    type Writer = WriteHalf<R>;

    fn split(self) -> (Self::Reader, Self::Writer) {
        (self.reader, self.writer)
    }

    async fn close(&mut self) -> io::Result<()> {
        AsyncWriteExt::close(&mut self.writer).await
    }

    async fn write_all(&mut self, payload: &[u8]) -> io::Result<()> {
        AsyncWriteExt::write_all(&mut self.writer, payload).await
    }

    async fn flush(&mut self) -> io::Result<()> {
        AsyncWriteExt::flush(&mut self.writer).await
    }

    async fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.peek(buf).await
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        AsyncReadExt::read_exact(&mut self.reader, buf).await
    }

    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        AsyncReadExt::read(&mut self.reader, buf).await
    }

    async fn peek_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.reader.peek_exact(buf).await
    }
}

impl<R: Runtime> PromisedStream for BoundStream<R> {
    type Instant = R::Instant;

    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }
}

#[cfg(test)]
mod tests {
    use memberlist::agnostic::tokio::TokioRuntime;
    use memberlist::net::stream_layer::{Listener, PromisedStream, StreamLayer};

    use super::BoundTcp;

    #[tokio::test]
    async fn outgoing_connections_leave_from_the_bind_address() {
        let server = BoundTcp::<TokioRuntime>::new("127.0.0.1".parse().unwrap())
            .await
            .unwrap();
        let listener = server.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let to = listener.local_addr();
        // Any 127.0.0.0/8 address is local on Linux: the node "127.0.0.2" dials from it.
        let client = BoundTcp::<TokioRuntime>::new("127.0.0.2".parse().unwrap())
            .await
            .unwrap();
        let stream = client.connect(to).await.unwrap();
        let (_, from) = listener.accept().await.unwrap();
        assert_eq!(from.ip().to_string(), "127.0.0.2");
        assert_eq!(PromisedStream::local_addr(&stream).ip(), from.ip());
    }
}
