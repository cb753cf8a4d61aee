//! Simulated neighbourhoods (see issue: testnet). Nothing here yet.
