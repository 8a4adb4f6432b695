//! PyTorch's recurrent modules as cells: the `.rnn` sources that read an
//! `nn.LSTM`, `nn.GRU` or `nn.RNN` state_dict as it is (the files of
//! `examples/`, built in), for programs and bindings that turn a module into
//! a network without a file at hand.

/// A PyTorch recurrent module's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Module {
    /// `nn.LSTM` (and `nn.LSTMCell`).
    Lstm,
    /// `nn.LSTM(proj_size = P)`.
    LstmProj,
    /// `nn.GRU` (and `nn.GRUCell`).
    Gru,
    /// `nn.RNN(nonlinearity = 'tanh')`.
    RnnTanh,
    /// `nn.RNN(nonlinearity = 'relu')`.
    RnnRelu,
}

impl Module {
    /// The module of a PyTorch class name (`LSTM`, `GRU`, `RNN`), with its
    /// `proj_size` (LSTM) and `nonlinearity` (RNN); `None` for any other.
    pub fn of(class: &str, proj_size: usize, nonlinearity: &str) -> Option<Module> {
        match (class, nonlinearity) {
            ("LSTM" | "LSTMCell", _) if proj_size > 0 => Some(Module::LstmProj),
            ("LSTM" | "LSTMCell", _) => Some(Module::Lstm),
            ("GRU" | "GRUCell", _) => Some(Module::Gru),
            ("RNN" | "RNNCell", "tanh") => Some(Module::RnnTanh),
            ("RNN" | "RNNCell", "relu") => Some(Module::RnnRelu),
            _ => None,
        }
    }

    /// The cell's file name and source.
    pub fn cell(self) -> (&'static str, &'static str) {
        match self {
            Module::Lstm => ("lstm.rnn", include_str!("../examples/lstm.rnn")),
            Module::LstmProj => ("lstm_proj.rnn", include_str!("../examples/lstm_proj.rnn")),
            Module::Gru => ("gru.rnn", include_str!("../examples/gru.rnn")),
            Module::RnnTanh => ("rnn_tanh.rnn", include_str!("../examples/rnn_tanh.rnn")),
            Module::RnnRelu => ("rnn_relu.rnn", include_str!("../examples/rnn_relu.rnn")),
        }
    }

    /// The states the module returns, in its order (`h_n`, `c_n`).
    pub fn states(self) -> &'static [&'static str] {
        match self {
            Module::Lstm | Module::LstmProj => &["h", "c"],
            _ => &["h"],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_cell_checks() {
        for m in [
            Module::Lstm,
            Module::LstmProj,
            Module::Gru,
            Module::RnnTanh,
            Module::RnnRelu,
        ] {
            let (name, source) = m.cell();
            let cell = crate::Cell::from_source(name, source).unwrap();
            let states: Vec<String> = cell
                .checked()
                .states
                .iter()
                .map(|s| s.name.clone())
                .collect();
            assert_eq!(states, m.states(), "{name}");
        }
        assert_eq!(Module::of("LSTM", 3, ""), Some(Module::LstmProj));
        assert_eq!(Module::of("RNN", 0, "relu"), Some(Module::RnnRelu));
        assert_eq!(Module::of("Linear", 0, ""), None);
    }
}
