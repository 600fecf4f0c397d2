//! The local services the ETL tests run against: a real Apache Airflow 3 ([`airflow`])
//! and the NiFi fake ([`nifi`]).
#![allow(dead_code)]

pub mod airflow;
pub mod nifi;
