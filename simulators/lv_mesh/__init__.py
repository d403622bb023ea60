"""Patient LV meshes: truncated ellipsoids from cardiac-geometries-core, tagged with regions,
AHA segments, fibres and hydrogel treatment regions."""
