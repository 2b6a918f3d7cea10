"""`kvlab import`: a lab reproducing a customer's topology from what they can hand over (their
nodes, their Calico resources, optionally their VMIs and ToR BIRD configs).

- `dump`: reading the dumps (hostile input: safe, bounded YAML; List wrappers; bookkeeping ignored)
- `build`: resources -> cluster (`harness.calico.cluster.from_resources`) -> racks, ToRs, route
  reflectors, pools, VMs, renumbered into the lab's ranges; a warning for whatever is not reproduced
- `torconf`: what is read of a ToR's BIRD config
- `mapping`: the customer's addresses and names and the lab's (`--as-customer`)
- `write`: the lab file, its resources file and the mapping, written once the lab validates
"""
