"""The openCARP adapter: the reference electrophysiology's beat run by the openCARP program."""
