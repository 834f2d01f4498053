//! Wiring (being written)
