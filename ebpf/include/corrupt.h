/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Payload corruption for corrupt faults: flips bits of a TCP or UDP payload, never of a
 * header, and either keeps the L4 checksum right (the receiving application gets the
 * corrupted bytes) or leaves it wrong (the receiving kernel discards the packet, as netem's
 * corrupt makes it). Private to faults.bpf.c; nothing here is shared with faultd.
 *
 * Which bits: the payload window (for a GSO packet, its first segment's payload, so exactly
 * one wire segment changes) is cut into `bits` equal slices and one bit is drawn in each, so
 * the bits are distinct and a packet differs from what was sent in exactly `bits` bits.
 *
 * Checksums, by what the skb says of its L4 checksum (tc cannot read ip_summed; see
 * fl_is_partial in reply.h):
 * - recompute: each flipped bit's 16-bit word (aligned from the L4 header, as the checksum
 *   sums it) goes through bpf_l4_csum_replace. A CHECKSUM_PARTIAL skb keeps its field: the
 *   device or the stack completes the sum later, over the corrupted bytes. A UDP checksum of
 *   0 (none, IPv4) stays 0. skb->csum of a CHECKSUM_COMPLETE skb stays right, as the data and
 *   the field change by opposite amounts.
 * - broken: the field is left alone, and skb->csum is moved with the data so a
 *   CHECKSUM_COMPLETE skb fails the receiver's check; a CHECKSUM_UNNECESSARY skb (a NIC that
 *   checked it) is made CHECKSUM_NONE so the stack checks again. A CHECKSUM_PARTIAL skb cannot
 *   carry a wrong checksum (the device completes it over whatever the payload is, and a veth
 *   peer trusts it unchecked): it is reported FL_CORRUPT_UNCARRIABLE and the caller drops it
 *   where the receiving kernel would have. A UDP datagram without a checksum is delivered
 *   corrupted, as on a wire.
 */
#ifndef FAULTLINE_CORRUPT_H
#define FAULTLINE_CORRUPT_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "faultline.h"
#include "reply.h"

#define FL_UDP_HLEN 8
/* Where the checksum field is in each L4 header. */
#define FL_TCP_CHECK 16
#define FL_UDP_CHECK 6

/* fl_flip_payload_bits' answer for a broken checksum a CHECKSUM_PARTIAL skb cannot carry. */
#define FL_CORRUPT_UNCARRIABLE -2

/*
 * Moves the L4 checksum field of a packet whose flipped bits cancelled out in the ones'
 * complement sum (a bit set in one word, the same bit cleared in another: the checksum's
 * blind spot), so it is wrong after all; skb->csum follows the field, so a CHECKSUM_COMPLETE
 * skb fails too. A UDP checksum of 0 means none, and stays so; no value becomes 0.
 */
static __always_inline void fl_break_checksum(struct __sk_buff *skb, __u8 proto, __u32 check_off)
{
	__u16 field = 0, wrong;

	if (bpf_skb_load_bytes(skb, check_off, &field, sizeof(field)) < 0)
		return;
	if (proto == IPPROTO_UDP && field == 0)
		return;
	/* Not 0 and not the field's ones' complement twin (0 and 0xffff are the same sum). */
	wrong = field ^ bpf_htons(1);
	if (wrong == 0)
		wrong = bpf_htons(2);
	bpf_skb_store_bytes(skb, check_off, &wrong, sizeof(wrong), BPF_F_RECOMPUTE_CSUM);
}

/*
 * Flips `bits` distinct bits of the payload of the TCP or UDP packet whose L4 header is at
 * `l4_off` and whose `payload` bytes start at `payload_off` (offsets from the Ethernet
 * header); `broken` leaves the checksum wrong. Returns the number of bits flipped (fewer than
 * asked only if a helper fails, e.g. out of memory while making a cloned skb writable), or
 * FL_CORRUPT_UNCARRIABLE.
 */
static __always_inline int fl_flip_payload_bits(struct __sk_buff *skb, __u8 proto, __u32 l4_off,
						__u32 payload_off, __u32 payload, __u32 bits,
						int broken)
{
	__u32 check_off = l4_off + (proto == IPPROTO_TCP ? FL_TCP_CHECK : FL_UDP_CHECK);
	/* UDP's 0 means "no checksum": it must stay 0, and a computed 0 is sent as 0xffff. */
	__u64 csum_flags = 2 | (proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0);
	__u32 window = payload, slice, change = 0;
	int flipped = 0;

	if (skb->gso_size && window > skb->gso_size)
		window = skb->gso_size;
	if (payload_off >= skb->len)
		return 0;
	if (window > skb->len - payload_off)
		window = skb->len - payload_off;
	if (window == 0 || bits == 0 || bits > FL_MAX_CORRUPT_BITS)
		return 0;
	if (broken) {
		if (fl_is_partial(skb, check_off))
			return FL_CORRUPT_UNCARRIABLE;
		bpf_csum_level(skb, BPF_CSUM_LEVEL_RESET);
	}
	/* window is at most 64 KiB, so its bit count fits, and a slice holds at least one bit
	 * (window >= 1 byte >= bits / 8). */
	slice = window * 8 / bits;
	for (__u32 i = 0; i < FL_MAX_CORRUPT_BITS; i++) {
		__u32 bit, byte_off;
		__u16 before, after; /* the byte's checksum word, the other byte taken as 0 */
		__u8 byte;

		if (i >= bits)
			break;
		bit = i * slice + bpf_get_prandom_u32() % slice;
		byte_off = payload_off + bit / 8;
		if (bpf_skb_load_bytes(skb, byte_off, &byte, 1) < 0)
			break;
		/* The checksum sums big-endian 16-bit words counted from the L4 header's first
		 * byte: an even offset is a word's high byte. The word's other byte does not
		 * change, so it adds nothing to the difference. */
		before = (byte_off - l4_off) & 1 ? byte : (__u16)byte << 8;
		byte ^= 0x80 >> (bit % 8);
		after = (byte_off - l4_off) & 1 ? byte : (__u16)byte << 8;
		if (bpf_skb_store_bytes(skb, byte_off, &byte, 1, broken ? BPF_F_RECOMPUTE_CSUM : 0) < 0)
			break;
		if (!broken && bpf_l4_csum_replace(skb, check_off, bpf_htons(before),
						   bpf_htons(after), csum_flags) < 0)
			break;
		change += (__u16)~before + after;
		flipped++;
	}
	if (broken && flipped > 1 && fl_fold(change) % 0xffff == 0)
		fl_break_checksum(skb, proto, check_off);
	return flipped;
}

#endif
