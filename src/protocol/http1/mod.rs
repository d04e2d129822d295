//! Protocol layer: the HTTP/1.1 codec (RFC 9112) over httparse. Pure functions over buffers;
//! the connection manager and the upstream pool do the I/O. (Skeleton: filled in by the codec
//! work.)
