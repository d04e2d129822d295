//! HTTP filters: dispatch from the configured filter kind to its implementation. (Skeleton:
//! filled in by the HTTP filters work.)
