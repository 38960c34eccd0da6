"""Dispatcher and aggregator Lambdas of the async ticket pipeline.

Handlers (:mod:`.dispatcher`, :mod:`.aggregator`) only parse the event, read settings once and
call one logic function; the logic modules (:mod:`.intake`, :mod:`.results`, :mod:`.jobs`,
:mod:`.chunking`, :mod:`.notifications`) receive their stores and clients as arguments, so the
same code runs on AWS, in the local stack (moto + a local async endpoint) and in tests.
"""
