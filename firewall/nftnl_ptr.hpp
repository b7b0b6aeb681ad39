// One owner per libnftnl handle type, defined once (libmnl's socket: nft_socket.hpp). Only the .cpp
// files that talk netlink include this (it pulls in the C libraries' headers).
#pragma once
#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>

#include "tunneld/c_ptr.hpp"

namespace tunneld::firewall {

using TablePtr = CPtr<nftnl_table, nftnl_table_free>;
using ChainPtr = CPtr<nftnl_chain, nftnl_chain_free>;
using SetPtr = CPtr<nftnl_set, nftnl_set_free>;
using RulePtr = CPtr<nftnl_rule, nftnl_rule_free>;
using UdataPtr = CPtr<nftnl_udata_buf, nftnl_udata_buf_free>;
using ExprIterPtr = CPtr<nftnl_expr_iter, nftnl_expr_iter_destroy>;

}  // namespace tunneld::firewall
