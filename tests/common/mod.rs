pub mod reference;
pub mod harness;
