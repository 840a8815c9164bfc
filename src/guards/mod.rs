//! Checks a request passes before anything is sent on its behalf.

pub mod access;
