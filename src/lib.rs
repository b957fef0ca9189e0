//! # profiledb
//!
//! An embedded profile store for the `identify` call of analytics and CRM products.
#![deny(unsafe_code)]
#![warn(missing_docs)]

/// The README's library example, run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

mod apply;
mod db;
mod entries;
mod error;
mod index;
mod options;
pub mod profile;
mod rebuild;
#[cfg(feature = "server")]
pub mod server;
pub mod storage;
mod view;
mod wire;
pub mod workload;

pub use db::{Company, Db, Moved, Outcome, Prepared, Profile, Selector, Stats, Status};
pub use error::{Error, FieldError, Result};
pub use options::{DEFAULT_PLACEHOLDER_IDS, Durability, Options};
pub use profile::filter::{Filter, Op};
pub use profile::message::{Alias, CompanyRef, Group, Identify, Link, Message, Number};
pub use profile::props::ListOp;
pub use profile::value::{Timestamp, Value};
