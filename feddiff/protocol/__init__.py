"""Protocol layer of the FedDiff core: what goes on the wire and how it is checked.

  message    Header, Message, Filter, FilterChain, EnvelopeError (the fixed interface)
  envelope   pack/unpack of b"FDF1" envelopes, canonical header bytes for signers
  arrays     named numpy arrays <-> bytes (never pickle)
  topics     the feddiff/<job>/... topic scheme
  filters    CompressFilter, DedupFilter
  chunking   ChunkFilter
  channel    Channel: numbered messages through the chain over a transport
  endpoint   opening a party's channel from the job config
  jobs       the message kinds' names and pixel ownership
  messages   one dataclass per job message kind (label_messages: label holder and HE kinds)
  payload    checked reads of a payload's arrays (what a bad one is)
  exchange   reply matching, early buffer and pipelining, both sides

See docs/protocol.md.
"""

from feddiff.protocol.message import ENVELOPE_VERSION, EnvelopeError, Filter, FilterChain, Header, Message

__all__ = ["ENVELOPE_VERSION", "EnvelopeError", "Filter", "FilterChain", "Header", "Message"]
