//! Dependencies: the equations in an order where each value is defined before
//! it is read, and every cycle reported with the path that closes it.

use super::*;

impl Checker {
    pub(super) fn check_equations(&mut self, file: &ast::File) {
        // What each equation defines, so that uses may come before definitions.
        for item in &file.items {
            let Item::Equation(eq) = item else { continue };
            let idx = self.equations.len();
            let target = self.equation_target(eq, idx);
            self.equations.push(target.map(|t| Equation {
                target: t,
                value: eq.value.clone(),
                lhs_span: eq.lhs_span,
            }));
        }
        self.used_lets = vec![false; self.lets.len()];
        self.let_types = vec![None; self.lets.len()];
        self.deps = (0..self.equations.len())
            .map(|i| {
                let mut deps = Vec::new();
                if let Some(eq) = self.equations[i].clone() {
                    self.collect_deps(&eq.value, &mut deps);
                }
                deps
            })
            .collect();
    }

    /// The equations an expression reads (by index), and marks what it uses.
    pub(super) fn collect_deps(&mut self, e: &Expr, deps: &mut Vec<(usize, Span)>) {
        match &e.kind {
            ExprKind::Number(_) => {}
            ExprKind::Var { name, primed } => {
                let def = match (self.scope.get(&name.name).copied(), primed) {
                    (Some(Ref::State(s)), true) => self.state_def[s],
                    (Some(Ref::Let(l)), false) => {
                        self.used_lets[l] = true;
                        self.let_def[l]
                    }
                    (Some(Ref::Output(o)), false) => self.output_def[o],
                    (Some(Ref::Param(p)), false) => {
                        self.used_params[p] = true;
                        None
                    }
                    (Some(Ref::Input(i)), false) => {
                        self.used_inputs[i] = true;
                        None
                    }
                    _ => None,
                };
                if let Some(d) = def {
                    deps.push((d, e.span));
                }
            }
            ExprKind::Call { args, .. } => {
                for a in args {
                    self.collect_deps(a, deps);
                }
            }
            ExprKind::Neg(inner) => self.collect_deps(inner, deps),
            ExprKind::Sum(terms) => {
                for (_, t) in terms {
                    self.collect_deps(t, deps);
                }
            }
            ExprKind::Product(factors) => {
                for (_, f) in factors {
                    self.collect_deps(f, deps);
                }
            }
            ExprKind::MatVec { matrices, vector } => {
                for m in matrices {
                    if let Some(Ref::Param(p)) = self.scope.get(&m.name) {
                        self.used_params[*p] = true;
                    }
                }
                self.collect_deps(vector, deps);
            }
        }
    }

    /// Orders the equations so that each comes after those it reads; reports cycles.
    pub(super) fn order_equations(&mut self) -> Vec<usize> {
        let n = self.equations.len();
        let mut indegree = vec![0usize; n];
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, deps) in self.deps.iter().enumerate() {
            let mut seen = std::collections::HashSet::new();
            for &(d, _) in deps {
                if seen.insert(d) {
                    indegree[i] += 1;
                    users[d].push(i);
                }
            }
        }
        // Kahn's algorithm, taking the earliest ready equation in source order.
        let mut ready: std::collections::BTreeSet<usize> =
            (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &u in &users[i] {
                indegree[u] -= 1;
                if indegree[u] == 0 {
                    ready.insert(u);
                }
            }
        }
        if order.len() < n {
            self.report_cycles(&indegree);
        }
        order
    }

    pub(super) fn report_cycles(&mut self, indegree: &[usize]) {
        // Every equation left with a positive in-degree is on a cycle or reads one.
        // For each not yet reported, look for a path from it back to itself (breadth
        // first, so the cycle shown is a shortest one); equations that only read a
        // cycle have none.
        let n = indegree.len();
        let mut reported = vec![false; n];
        for start in 0..n {
            if indegree[start] == 0 || reported[start] {
                continue;
            }
            let mut parent: Vec<Option<(usize, Span)>> = vec![None; n];
            let mut queue = std::collections::VecDeque::from([start]);
            let mut seen = vec![false; n];
            let mut closing: Option<(usize, Span)> = None;
            'search: while let Some(cur) = queue.pop_front() {
                for &(next, span) in &self.deps[cur] {
                    if indegree[next] == 0 {
                        continue;
                    }
                    if next == start {
                        closing = Some((cur, span));
                        break 'search;
                    }
                    if !seen[next] {
                        seen[next] = true;
                        parent[next] = Some((cur, span));
                        queue.push_back(next);
                    }
                }
            }
            let Some((last, last_span)) = closing else {
                continue;
            };
            // Walk back from `last` to `start`: the cycle is start -> ... -> last -> start,
            // each step with the span where the value is read.
            let mut cycle: Vec<(usize, Span)> = vec![(last, last_span)];
            let mut cur = last;
            while cur != start {
                let Some((prev, span)) = parent[cur] else {
                    break;
                };
                cycle.push((prev, span));
                cur = prev;
            }
            cycle.reverse();
            for (i, _) in &cycle {
                reported[*i] = true;
            }
            self.push_cycle(&cycle);
        }
    }

    /// Reports one cycle: `cycle[k]` is an equation and the span where it reads the next.
    pub(super) fn push_cycle(&mut self, cycle: &[(usize, Span)]) {
        let name_of = |i: usize| -> String {
            match self.equations[i].as_ref().map(|e| e.target) {
                Some(Target::Let(l)) => self.lets[l].name.clone(),
                Some(Target::State(s)) => format!("{}'", self.states[s].name),
                Some(Target::Output(o)) => self.outputs[o].name.clone(),
                None => "?".into(),
            }
        };
        let first = cycle[0].0;
        let chain: Vec<String> = cycle
            .iter()
            .map(|(i, _)| format!("`{}`", name_of(*i)))
            .chain(std::iter::once(format!("`{}`", name_of(first))))
            .collect();
        let head = self.equations[first]
            .as_ref()
            .map_or(Span::default(), |e| e.lhs_span);
        let last = cycle[cycle.len() - 1];
        let mut d = Diagnostic::error(
            "E0056",
            format!("`{}` depends on itself within one step", name_of(first)),
        )
        .primary(last.1, format!("`{}` is read here", name_of(first)))
        .secondary(head, "defined here");
        for k in 0..cycle.len() - 1 {
            let (i, span) = cycle[k];
            d = d.secondary(
                span,
                format!("`{}` reads `{}`", name_of(i), name_of(cycle[k + 1].0)),
            );
        }
        d = d.note(format!("the cycle: {}", chain.join(" -> ")));
        d = d.note("to use a value from the previous step, make it a state and read it unprimed");
        self.diags.push(d);
    }
}
