//! xDS transport: ADS/SDS streams over tonic (state of the world and Delta), ACK/NACK,
//! reconnect with back-off. (Being written.)
