"""Packet captures in and out: pcap/pcapng files to tcbench-schema flows (`tsda data
import`), flows to synthetic pcap files (`tsda data export`, `tsda sample --out X.pcap`).

The pipeline, each stage vectorised in numpy over a chunk of packets:
`framing` (records of a pcap or pcapng file) -> `decode` (link, IP, TCP/UDP headers) ->
`flows` (bidirectional 5-tuple flows with idle/active timeouts and TCP FIN/RST ends) ->
`importer` (labels, Parquet row groups). `export` writes flows back as packets.
"""
