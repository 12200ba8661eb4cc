"""training: SimScale's data generation (`generate`: one sample; `engine`: rounds, shards, manifest, workers and Ray;
`export`: NAVSIM's OpenScene layout). `simscale generate` / `simscale export` run them."""
